"""The wire under every server of the project, and nothing Downpour- or Sandblaster-specific.

``frames`` (versioned binary frames with a checksum; nothing is ever unpickled), ``flask_app``
(guarded Flask apps: token, size limit), ``keepalive`` and ``http_server`` (a threaded HTTP/1.1
keep-alive server started and stopped from the driver), ``child_process`` (serving from a spawned
child) and ``client`` (the one HTTP client base: timeouts, retries, errors).
"""
