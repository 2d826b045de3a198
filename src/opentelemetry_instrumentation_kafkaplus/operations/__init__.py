"""Operations: the only code that starts or ends spans and records per-message metrics.

One module per messaging operation (send, process/receive, settle, transaction,
loss); each opens with the span's name, kind, parent and links, attributes and
metrics. Clients reach them through their public functions only.
"""
