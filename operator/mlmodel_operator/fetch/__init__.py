"""The storage initializer: `mlmodel-fetch` downloads a model into the volume the model server
reads, as the init container of every model pod whose model_uri is in object storage or on the
web. Credentials reach this process only; the model server never sees them.

Importing this package is cheap (the operator imports `uri` to build the init container); the
client libraries are imported by the source modules, which only the fetcher loads.
"""
