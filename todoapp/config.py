"""Settings from the environment and `.env` (pydantic-settings), and get_settings()."""

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Only ever accepted when ENVIRONMENT=development; see Settings.check_secret_key.
DEVELOPMENT_SECRET_KEY = "development-only-secret-key-do-not-use-in-production"
MIN_SECRET_KEY_BYTES = 32


class ConfigError(Exception):
    """A setting that makes it unsafe or impossible to start; the message is one line."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = "sqlite:///./todoapp.db"
    secret_key: str = DEVELOPMENT_SECRET_KEY
    access_token_expire_minutes: int = Field(default=30, ge=1, le=60 * 24 * 365)
    # A session (and its refresh token) ends after this many days without a refresh.
    refresh_token_expire_days: int = Field(default=30, ge=1, le=3650)
    environment: str = "development"
    cors_origins: Annotated[list[str], NoDecode] = []
    redis_url: str | None = None
    # Failed logins per (account, client address) within a window, and per client
    # address across all names; see throttle.py.
    login_max_failures: int = Field(default=5, ge=1)
    login_max_failures_per_address: int = Field(default=50, ge=1)
    login_window_seconds: int = Field(default=15 * 60, ge=1)
    # Prefix of every Redis key the app writes (several apps can share one Redis).
    redis_key_prefix: str = Field(default="todoapp:", max_length=100)
    # 12 in production; the test suite sets 4 so that hashing does not dominate it.
    bcrypt_rounds: int = Field(default=12, ge=4, le=31)
    # Threads that run sync routes in one worker; the PostgreSQL pool gets as many
    # connections, so a request never waits for a connection while holding a thread.
    worker_threads: int = Field(default=20, ge=1, le=1000)
    # PostgreSQL connections each worker keeps for the fast lane's reads on the event
    # loop (todoapp/fastlane.py), on top of the pool; 0 runs those reads in a thread.
    fast_lane_connections: int = Field(default=8, ge=0, le=1000)
    db_pool_timeout: float = Field(default=5.0, gt=0)
    # Password hashes (logins, registrations, password changes) one worker runs at once,
    # and how long a request waits for a turn before 503: floods of them never take the
    # threads and connections other requests need (see deps.take_hashing_slot).
    hashing_slots: int = Field(default=2, ge=1, le=1000)
    hashing_wait_seconds: float = Field(default=2.0, gt=0, le=60)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Operations (README, Scale-out): logs a machine reads, metrics, draining on SIGTERM,
    # and a pooler in transaction mode (PgBouncer) between the app and PostgreSQL.
    log_format: Literal["text", "json"] = "text"
    metrics_enabled: bool = False
    metrics_token: str | None = None
    drain_seconds: float = Field(default=5.0, ge=0, le=600)
    db_pooler: Literal["none", "transaction"] = "none"

    # --- mail: recovery, verification and their delivery (README, Mail) ---------
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: Literal["starttls", "ssl", "none"] = "starttls"
    smtp_timeout: float = Field(default=10.0, gt=0)
    mail_from: str = "todoapp <no-reply@localhost>"
    password_reset_url: str = "http://127.0.0.1:8000/#/reset-password?token={token}"
    email_verify_url: str = "http://127.0.0.1:8000/#/verify-email?token={token}"
    password_reset_expire_minutes: float = Field(default=60, gt=0)
    email_verify_expire_hours: float = Field(default=24, gt=0)
    require_verified_email: bool = False
    # The delivery worker: how often it looks for due mail, the first pause after a
    # failed attempt (doubled each time, up to the maximum), when it gives up, how
    # long a claimed mail is its own, and how long finished rows are kept.
    mail_poll_seconds: float = Field(default=2.0, gt=0)
    mail_retry_base_seconds: float = Field(default=30.0, gt=0)
    mail_retry_max_seconds: float = Field(default=3600.0, gt=0)
    mail_give_up_hours: float = Field(default=48.0, gt=0)
    mail_claim_seconds: float = Field(default=120.0, gt=0)
    mail_keep_hours: float = Field(default=7 * 24.0, gt=0)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator(
        "redis_url", "metrics_token", "smtp_host", "smtp_username", "smtp_password", mode="before"
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("password_reset_url", "email_verify_url")
    @classmethod
    def _has_token_slot(cls, value: str) -> str:
        if "{token}" not in value:
            raise ValueError("must contain {token}, where the token goes")
        return value

    @field_validator("secret_key", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `SECRET_KEY=` (as in .env.example) means "not set", never an empty key.
        return DEVELOPMENT_SECRET_KEY if isinstance(value, str) and not value.strip() else value

    @property
    def hashing_turns(self) -> int:
        """HASHING_SLOTS, kept below WORKER_THREADS: hashing never takes every thread."""
        return max(1, min(self.hashing_slots, self.worker_threads - 1))

    @property
    def secure_cookies(self) -> bool:
        """Cookies carry `Secure` everywhere but in development (plain http://127.0.0.1)."""
        return self.environment != "development"

    @property
    def uses_development_secret(self) -> bool:
        return self.secret_key == DEVELOPMENT_SECRET_KEY

    def check_secret_key(self) -> None:
        """Refuse an unsafe SECRET_KEY outside development (raises ConfigError)."""
        if self.environment == "development":
            return
        if self.uses_development_secret:
            raise ConfigError(
                f"SECRET_KEY is the built-in development key, which ENVIRONMENT="
                f"{self.environment} refuses: set SECRET_KEY to a random value of at "
                f"least {MIN_SECRET_KEY_BYTES} bytes"
            )
        if len(self.secret_key.encode()) < MIN_SECRET_KEY_BYTES:
            raise ConfigError(
                f"SECRET_KEY is shorter than {MIN_SECRET_KEY_BYTES} bytes, which "
                f"ENVIRONMENT={self.environment} refuses: set a longer random value"
            )


@lru_cache
def get_settings() -> Settings:
    return Settings()
