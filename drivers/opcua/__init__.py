"""OPC UA (asyncua): batched reads, subscriptions, node ids and browse paths, value mapping."""
