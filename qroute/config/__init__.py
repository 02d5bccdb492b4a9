"""Settings: ``qroute.yaml`` overridden by ``QROUTE_*`` environment variables.

Nested fields use ``__`` in the environment: ``QROUTE_ENCODER__MODEL=/models/ko-sroberta``,
``QROUTE_STORE__LOCATION=http://qdrant:6333``. Precedence: environment > file > defaults.

A model is a Hugging Face hub id or a local directory. The store location is a local
directory (embedded Qdrant Edge, one process at a time per version) or an
``http(s)://`` URL of a Qdrant server or cluster.

Hot-reloadable: ``router.*``, ``zero_shot.*``, ``retrieval.*`` but ``mode``,
``server.index_poll_s``/``config_poll_s``/``shutdown_grace_s``. Restart-only:
``retrieval.mode``, ``encoder.*``, ``lexical.*``, ``nli.*``, ``store.*``, ``batching.*``,
``review.*``, ``shadow.*``,
``server.bind``, ``server.metrics_port``/``metrics_host``, ``server.tls``, ``server.auth`` and
``server.reflection``; a reload that changes them keeps the running values and says so
(``Settings.reloaded`` is the one place that decides). The files that ``server.tls`` and
``server.auth`` name are re-read while the router runs: certificates and tokens rotate
without a restart, only the paths need one.
"""

from qroute.config.data import IndexSettings, StoreSettings, TableSettings
from qroute.config.learning import ReviewSettings, ShadowSettings
from qroute.config.models import EncoderSettings, LexicalSettings, NLISettings
from qroute.config.routing import (
    BatchingSettings,
    RetrievalSettings,
    RouterSettings,
    TunedSettings,
    ZeroShotSettings,
)
from qroute.config.serving import AuthSettings, ClientSettings, ServerSettings, TLSSettings
from qroute.config.settings import RESTART_ONLY, RESTART_ONLY_SERVER, Settings, load_settings

__all__ = [
    "RESTART_ONLY",
    "RESTART_ONLY_SERVER",
    "AuthSettings",
    "BatchingSettings",
    "ClientSettings",
    "EncoderSettings",
    "IndexSettings",
    "LexicalSettings",
    "NLISettings",
    "RetrievalSettings",
    "ReviewSettings",
    "RouterSettings",
    "ServerSettings",
    "Settings",
    "ShadowSettings",
    "StoreSettings",
    "TLSSettings",
    "TableSettings",
    "TunedSettings",
    "ZeroShotSettings",
    "load_settings",
]
