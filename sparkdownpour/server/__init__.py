"""Downpour's master model server: its store, app and server run on the driver (or in child
processes it starts, ``store_process``); its clients (``ParameterClient``, ``ShardedClient``) run
in the replicas on executors. The frame names are re-exported from ``transport.frames``."""

from sparkdownpour.server.app import ParameterServer, create_app
from sparkdownpour.server.client import ParameterClient
from sparkdownpour.server.store import ParameterStore, PushResult
from sparkdownpour.transport.frames import (
    FRAME_CONTENT_TYPE,
    Frame,
    ProtocolError,
    decode_frame,
    encode_frame,
)

__all__ = [
    "FRAME_CONTENT_TYPE",
    "Frame",
    "ParameterClient",
    "ParameterServer",
    "ParameterStore",
    "ProtocolError",
    "PushResult",
    "create_app",
    "decode_frame",
    "encode_frame",
]
