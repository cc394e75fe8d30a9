"""All configuration, read once from GRADER_* environment variables (or a .env file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRADER_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path("./grader-data"), description="SQLite database and stored uploads")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in data_dir")
    queue_url: str | None = Field(default=None, description="redis:// URL: grade on `grader worker` processes")
    queue_namespace: str = Field(default="grader", description="prefix of every Redis key the queue uses")
    queue_heartbeat_timeout: float = Field(
        default=15.0, gt=0, description="seconds a silent worker counts as alive before its work is requeued"
    )
    api_tokens: str = Field(default="", description="comma-separated bearer tokens for the HTTP API")
    assignment_dir: Path | None = Field(default=None, description="assignment folder; default reference/hw5")
    workers: int = Field(default=0, ge=0, description="sandbox processes; 0 means one per core")
    max_upload_mb: float = Field(default=20.0, gt=0)
    insecure_no_sandbox: bool = Field(default=False, description="grade even where no isolation holds")
    callback_secret: str = Field(default="", description="HMAC key for result callbacks")

    @property
    def tokens(self) -> list[str]:
        return [t.strip() for t in self.api_tokens.split(",") if t.strip()]

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'grader.db').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
