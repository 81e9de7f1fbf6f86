"""Every environment variable canvascast reads, named in one place.

Config keys also come from ``CANVASCAST_<TABLE>__<KEY>`` (see ``config``); the names here
are the rest: global options, locations, credentials and endpoints. Secrets (tokens, API
keys) are read where they are used and never printed.
"""

from __future__ import annotations

PREFIX = "CANVASCAST_"

# Global options (each also a flag of the root command).
JSON = "CANVASCAST_JSON"
QUIET = "CANVASCAST_QUIET"
VERBOSE = "CANVASCAST_VERBOSE"
CONFIG = "CANVASCAST_CONFIG"
NO_COLOR = "CANVASCAST_NO_COLOR"
BACKEND = "CANVASCAST_BACKEND"
NO_COLOR_STANDARD = "NO_COLOR"  # https://no-color.org

# Where state, caches and models live.
HOME = "CANVASCAST_HOME"
MODELS = "CANVASCAST_MODELS"
XDG_STATE_HOME = "XDG_STATE_HOME"
XDG_CACHE_HOME = "XDG_CACHE_HOME"

# Tools and services.
FFMPEG = "CANVASCAST_FFMPEG"
GEMINI_BASE_URL = "CANVASCAST_GEMINI_BASE_URL"
GEMINI_KEYS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")  # first set wins

# The remote backends: the job API over HTTP, and Modal's SDK.
MODAL_ENDPOINT = "MODAL_ENDPOINT"  # base URL of the job API (`canvascast serve` or Modal)
MODAL_TOKEN = "MODAL_TOKEN"  # bearer token of the job API (both ends)
MODAL_TOKEN_ID = "MODAL_TOKEN_ID"  # Modal SDK credentials (or the user's ~/.modal.toml)
MODAL_TOKEN_SECRET = "MODAL_TOKEN_SECRET"
MODAL_ENVIRONMENT = "MODAL_ENVIRONMENT"
MODAL_CONFIG_PATH = "MODAL_CONFIG_PATH"  # where the Modal SDK keeps its profiles
MODAL_ROLE = "CANVASCAST_MODAL_ROLE"  # set in each Modal image: which job it serves

# Supabase Storage (artifacts): the default names [storage] url_env and key_env give.
SUPABASE_URL = "SUPABASE_URL"
SUPABASE_SERVICE_KEY = "SUPABASE_SERVICE_KEY"

SECRETS = (MODAL_TOKEN, MODAL_TOKEN_SECRET, *GEMINI_KEYS, SUPABASE_SERVICE_KEY)
