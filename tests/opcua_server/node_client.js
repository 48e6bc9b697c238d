// An OPC UA client on another stack than asyncua (node-opcua), for tests/opcua_server:
// connects with Basic256Sha256/SignAndEncrypt and a user, reads, browses and writes, and
// prints what it saw as one JSON line. Arguments: one JSON object (see the test).
const opcua = require("node-opcua-client");
const { OPCUAClient, MessageSecurityMode, SecurityPolicy, AttributeIds, UserTokenType, DataType } = opcua;
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");

async function main() {
  const a = JSON.parse(process.argv[2]);
  const certificateManager = new OPCUACertificateManager({
    rootFolder: a.pki,
    automaticallyAcceptUnknownCertificate: true, // the test checks the server, not this client's trust
  });
  await certificateManager.initialize();
  const client = OPCUAClient.create({
    applicationName: "node-opcua test client",
    applicationUri: a.uri,
    securityMode: MessageSecurityMode.SignAndEncrypt,
    securityPolicy: SecurityPolicy.Basic256Sha256,
    certificateFile: a.cert,
    privateKeyFile: a.key,
    clientCertificateManager: certificateManager,
    endpointMustExist: false,
    connectionStrategy: { maxRetry: 2, initialDelay: 500, maxDelay: 1000 },
  });
  await client.connect(a.endpoint);
  const session = await client.createSession({ type: UserTokenType.UserName, userName: a.user, password: a.password });
  const namespaces = await session.readNamespaceArray();
  const ns = namespaces.indexOf(a.ns_uri);
  const out = { ns };
  const dv = await session.read({ nodeId: `ns=${ns};s=${a.node}`, attributeId: AttributeIds.Value });
  out.value = dv.value.value;
  out.status = dv.statusCode.name;
  out.dataType = DataType[dv.value.dataType];
  const browsed = await session.browse(`ns=${ns};s=${a.device}`);
  out.children = browsed.references.map((r) => r.browseName.name);
  const written = await session.write({
    nodeId: `ns=${ns};s=${a.write_node}`,
    attributeId: AttributeIds.Value,
    value: { value: { dataType: DataType.Double, value: a.write_value } },
  });
  out.write = written.name;
  await session.close();
  await client.disconnect();
  console.log("RESULT " + JSON.stringify(out)); // node-opcua logs to stdout too
}

main().catch((e) => {
  console.error(String(e && e.stack ? e.stack : e));
  process.exit(1);
});
