"""One downloader for every client: streamed, resumable, retrying, md5-verifying.

* ``requests.Session`` with ``trust_env`` on, so ``https_proxy`` / ``HTTPS_PROXY`` /
  ``NO_PROXY`` are honoured (compute nodes on Polaris reach the internet only through a proxy).
* Retries with exponential backoff (``backoff_base * 2**attempt`` seconds, capped at
  ``backoff_max``) on connection errors, 429 and 5xx; a ``Retry-After`` header wins.
* A partial file ``<name>.part`` is resumed with an HTTP ``Range`` request; a server that
  ignores the range (200 instead of 206) restarts it from zero.
* The md5 (when the manifest has one) and the size are checked before the file is renamed
  into place; a mismatch deletes the partial file and retries from scratch, and after the
  last attempt raises :class:`ChecksumError` — a bad file is never left under the final name.
* A token (GDC controlled data) is read from an environment variable or a file, sent as a
  header and never logged; 401/403 raise :class:`TokenRequiredError` saying where to put one.
* ``safe_extract`` unpacks tar(.gz) archives, rejecting absolute paths, ``..`` and links that
  point outside the destination.
"""
from __future__ import annotations

import email.utils
import hashlib
import logging
import os
import shutil
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import requests
import urllib3
from tqdm import tqdm

log = logging.getLogger(__name__)

RETRY_STATUS = {429, 500, 502, 503, 504}


class DownloadError(RuntimeError):
    """A download that failed for good; the message names the URL and the reason."""


class ChecksumError(DownloadError):
    pass


class TokenRequiredError(DownloadError):
    pass


class UnsafeArchiveError(DownloadError):
    pass


@dataclass
class TokenSource:
    """Where a token may come from: an environment variable, then a file."""

    env: str = ""
    file: str = ""
    header: str = "X-Auth-Token"

    def read(self) -> str | None:
        if self.env and os.environ.get(self.env, "").strip():
            return os.environ[self.env].strip()
        if self.file:
            p = Path(os.path.expanduser(self.file))
            if p.is_file():
                tok = p.read_text().strip()
                return tok or None
        return None

    def where(self) -> str:
        parts = []
        if self.env:
            parts.append(f"set the environment variable {self.env}")
        if self.file:
            parts.append(f"or put it in the file {self.file}")
        return " ".join(parts) or "configure download.<source>.token_env / token_file"


@dataclass
class HttpSettings:
    """Everything the downloader needs from ``config['download']['http']``."""

    retries: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 120.0
    timeout: float = 60.0
    chunk_size: int = 1 << 16
    max_workers: int = 4
    progress: bool = True
    token: TokenSource = field(default_factory=TokenSource)

    @classmethod
    def from_params(cls, http: dict | None, token: dict | None = None) -> "HttpSettings":
        http = dict(http or {})
        known = {k: http[k] for k in ("retries", "backoff_base", "backoff_max", "timeout",
                                      "chunk_size", "max_workers", "progress") if k in http}
        tok = TokenSource(**{k: v for k, v in (token or {}).items() if k in ("env", "file", "header")})
        return cls(token=tok, **known)


def md5_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _retry_after(resp: requests.Response | None) -> float | None:
    if resp is None:
        return None
    val = resp.headers.get("Retry-After")
    if not val:
        return None
    try:
        return max(0.0, float(val))
    except ValueError:
        try:
            dt = email.utils.parsedate_to_datetime(val)
            return max(0.0, dt.timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class Client:
    """An HTTP client with the retry / resume / verify policy above."""

    def __init__(self, settings: HttpSettings | None = None, *, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.settings = settings or HttpSettings()
        self.session = session or requests.Session()
        self.session.trust_env = True  # honour https_proxy / no_proxy / netrc
        self.session.headers.setdefault("User-Agent", "crossmodal-download/1")
        self._sleep = sleep

    # -- helpers ---------------------------------------------------------------------------
    def _headers(self, extra: dict | None = None) -> dict:
        h = dict(extra or {})
        tok = self.settings.token.read()
        if tok:
            h[self.settings.token.header] = tok
        return h

    def _delay(self, attempt: int, resp: requests.Response | None = None) -> float:
        ra = _retry_after(resp)
        if ra is not None:
            return min(ra, self.settings.backoff_max)
        return min(self.settings.backoff_base * (2 ** attempt), self.settings.backoff_max)

    def _auth_error(self, url: str, status: int) -> TokenRequiredError:
        have = self.settings.token.read() is not None
        what = "was rejected" if have else "is needed"
        return TokenRequiredError(
            f"{url}: HTTP {status}: an access token {what} for this file (controlled access). "
            f"To use one, {self.settings.token.where()}. The token is never logged or copied "
            f"under results/.")

    # -- JSON / text requests --------------------------------------------------------------
    def request(self, method: str, url: str, **kw) -> requests.Response:
        """A small request (API query) with the retry policy; returns the response."""
        headers = self._headers(kw.pop("headers", None))
        last: Exception | None = None
        for attempt in range(self.settings.retries + 1):
            resp = None
            try:
                resp = self.session.request(method, url, headers=headers,
                                            timeout=self.settings.timeout, **kw)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
                last = e  # incl. a connection cut mid-body (ChunkedEncodingError is no ConnectionError)
            else:
                if resp.status_code in (401, 403):
                    raise self._auth_error(url, resp.status_code)
                if resp.status_code not in RETRY_STATUS:
                    if resp.status_code >= 400:
                        raise DownloadError(f"{method} {url}: HTTP {resp.status_code}: {resp.text[:300]}")
                    return resp
                last = DownloadError(f"{method} {url}: HTTP {resp.status_code}")
            if attempt < self.settings.retries:
                d = self._delay(attempt, resp)
                log.warning("%s %s: %s; retry %d/%d in %.2f s", method, url, last, attempt + 1,
                            self.settings.retries, d)
                self._sleep(d)
        raise DownloadError(f"{method} {url}: giving up after {self.settings.retries + 1} attempts: {last}")

    def _json(self, resp: requests.Response, method: str, url: str):
        try:
            return resp.json()
        except ValueError as e:  # an HTML maintenance / error page served with 200
            raise DownloadError(f"{method} {url}: HTTP {resp.status_code} but the body is not JSON "
                                f"({resp.headers.get('Content-Type', '?')}): {resp.text[:200]!r}") from e

    def get_json(self, url: str, **kw):
        return self._json(self.request("GET", url, **kw), "GET", url)

    def post_json(self, url: str, payload: dict, **kw):
        return self._json(self.request("POST", url, json=payload, **kw), "POST", url)

    # -- files ----------------------------------------------------------------------------
    def fetch(self, url: str, dest: str | os.PathLike, *, md5: str | None = None,
              size: int | None = None, method: str = "GET", json: dict | None = None,
              desc: str | None = None) -> Path:
        """Stream ``url`` to ``dest`` (via ``dest.part``), resuming and verifying; returns dest.

        ``json`` makes it a POST (GDC bulk ``/data``); POST bodies are not resumed.
        """
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        md5 = (md5 or "").strip().lower() or None
        size = int(size) if size not in (None, "", 0) and str(size) != "nan" else None
        last: Exception | None = None
        for attempt in range(self.settings.retries + 1):
            resp = None
            try:
                resp = self._stream_once(url, part, method=method, json=json, size=size, desc=desc or dest.name)
                if resp is None:  # body complete
                    self._verify(url, part, md5, size)
                    os.replace(part, dest)
                    log.info("fetched %s -> %s (%d bytes)", url, dest, dest.stat().st_size)
                    return dest
                last = DownloadError(f"{url}: HTTP {resp.status_code}")
            except ChecksumError as e:
                part.unlink(missing_ok=True)  # a corrupt body is never resumed
                last = e
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    urllib3.exceptions.HTTPError, _ShortBody) as e:
                last = e  # keep the .part: the next attempt resumes it with Range
            if attempt < self.settings.retries:
                d = self._delay(attempt, resp)
                log.warning("%s: %s; retry %d/%d in %.2f s", url, last, attempt + 1, self.settings.retries, d)
                self._sleep(d)
        if isinstance(last, ChecksumError):
            part.unlink(missing_ok=True)
            raise ChecksumError(f"{last} (after {self.settings.retries + 1} attempts; the bad file was removed)")
        raise DownloadError(f"{url}: giving up after {self.settings.retries + 1} attempts: {last} "
                            f"(partial data kept in {part} for the next run to resume)")

    def _stream_once(self, url, part: Path, *, method, json, size, desc):
        """One attempt. Returns None when the body is complete, else the retryable response."""
        have = part.stat().st_size if part.exists() else 0
        if json is not None:
            have = 0  # POST downloads restart
        if size is not None and have == size:
            return None
        if size is not None and have > size:
            part.unlink()
            have = 0
        # identity encoding: byte offsets on disk are the server's, so a Range resume is exact
        headers = {"Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        with self.session.request(method, url, headers=self._headers(headers), json=json,
                                  stream=True, timeout=self.settings.timeout) as resp:
            if resp.status_code in (401, 403):
                raise self._auth_error(url, resp.status_code)
            if resp.status_code == 416 and have:  # nothing left to send: verify what we have
                return None
            if resp.status_code in RETRY_STATUS:
                return resp
            if resp.status_code >= 400:
                raise DownloadError(f"{url}: HTTP {resp.status_code}: {resp.text[:300]}")
            if have and resp.status_code != 206:
                log.info("%s: server ignored Range; restarting from 0", url)
                have = 0
            mode = "ab" if have else "wb"
            expected = None
            if resp.headers.get("Content-Length"):
                expected = have + int(resp.headers["Content-Length"])
            total = size or expected
            got = have
            with open(part, mode) as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                             desc=desc, disable=not self.settings.progress,
                                             leave=False) as bar:
                # raw bytes, each chunk written as it arrives: a cut loses at most one chunk
                for chunk in resp.raw.stream(self.settings.chunk_size, decode_content=False):
                    if chunk:
                        f.write(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
            if expected is not None and got < expected:
                raise _ShortBody(f"connection closed after {got} of {expected} bytes")
        return None

    def _verify(self, url: str, part: Path, md5: str | None, size: int | None) -> None:
        if size is not None and part.stat().st_size != size:
            raise ChecksumError(f"{url}: size {part.stat().st_size} != expected {size}")
        if md5:
            got = md5_of(part)
            if got != md5:
                raise ChecksumError(f"{url}: md5 {got} != expected {md5}")

    def fetch_many(self, items: Iterable[dict], *, max_workers: int | None = None) -> list[Path]:
        """Fetch ``items`` (dicts of fetch() keyword arguments incl. url, dest) concurrently.

        At most ``max_workers`` (default ``settings.max_workers``) run at once; every item is
        attempted, then the first error (with a count of the others) is raised.
        """
        items = list(items)
        workers = max(1, min(max_workers or self.settings.max_workers, len(items) or 1))
        out: list[Path] = []
        errors: list[str] = []
        with ThreadPoolExecutor(max_workers=workers) as ex:
            futs = {ex.submit(self.fetch, **it): it for it in items}
            for fut in tqdm(as_completed(futs), total=len(futs), desc="files", unit="file",
                            disable=not self.settings.progress):
                try:
                    out.append(fut.result())
                except DownloadError as e:
                    errors.append(str(e))
        if errors:
            raise DownloadError(f"{len(errors)} of {len(items)} downloads failed; first: {errors[0]}")
        return out


class _ShortBody(IOError):
    pass


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Extract a tar / tar.gz into ``dest`` refusing anything that would land outside it.

    Rejects absolute member names, ``..`` components, symlinks / hard links whose target
    resolves outside ``dest``, and device / fifo members.  Nothing is extracted when any
    member is unsafe (the whole archive is checked first).  Returns the extracted files.
    """
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:*") as tf:
        members = tf.getmembers()
        for m in members:
            name = m.name
            if name.startswith("/") or Path(name).is_absolute():
                raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path")
            if ".." in Path(name).parts:
                raise UnsafeArchiveError(f"{archive}: member {name!r} contains '..'")
            target = (dest / name).resolve()
            if dest != target and dest not in target.parents:
                raise UnsafeArchiveError(f"{archive}: member {name!r} would land outside {dest}")
            if m.issym() or m.islnk():
                link = m.linkname
                base = target.parent if m.issym() else dest
                lt = (base / link).resolve() if not Path(link).is_absolute() else Path(link).resolve()
                if Path(link).is_absolute() or (dest != lt and dest not in lt.parents):
                    raise UnsafeArchiveError(f"{archive}: link {name!r} -> {link!r} points outside {dest}")
            if m.isdev() or m.isfifo():
                raise UnsafeArchiveError(f"{archive}: member {name!r} is a device or fifo")
        try:
            tf.extractall(dest, members=members, filter="data")
        except tarfile.FilterError as e:  # belt and braces: Python's own filter
            raise UnsafeArchiveError(f"{archive}: {e}") from e
    return [dest / m.name for m in members if m.isfile()]


def copy_file(src, dest) -> None:
    """Atomic copy (temp sibling then rename)."""
    from crossmodal.fileio import atomic_path

    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
