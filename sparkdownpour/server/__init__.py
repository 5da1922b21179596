"""Downpour's master model server: its store, app and server run on the driver (or in child
processes it starts, ``store_process``); its clients (``ParameterClient``, ``ShardedClient``) run
in the replicas on executors. The frame names are re-exported from ``transport.frames``.

The names are imported on first use, so that a replica importing ``server.state_client`` or
``server.client`` does not load Flask with ``server.app`` (``sparkdownpour.lazy_exports``)."""

from sparkdownpour.lazy_exports import lazy_exports

_FRAMES = "sparkdownpour.transport.frames"
_EXPORTS = {
    "ParameterServer": "sparkdownpour.server.app",
    "create_app": "sparkdownpour.server.app",
    "ParameterClient": "sparkdownpour.server.client",
    "ParameterStore": "sparkdownpour.server.store",
    "PushResult": "sparkdownpour.server.store",
    "FRAME_CONTENT_TYPE": _FRAMES,
    "Frame": _FRAMES,
    "ProtocolError": _FRAMES,
    "decode_frame": _FRAMES,
    "encode_frame": _FRAMES,
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
