"""Tests for brainssl.datasets.download against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import logging
import re
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from brainssl.datasets import archive as archive_module
from brainssl.datasets import checksums
from brainssl.datasets import download as dl
from brainssl.datasets.archive import COMPLETE_MARKER, UnsafeArchiveError, safe_extract_tar
from brainssl.datasets.checksums import ChecksumEntry, ChecksumError, load_checksum_table
from brainssl.datasets.download import IXI_DEMOGRAPHICS, LOCK_FILE_NAME, fetch_ixi
from brainssl.datasets.transfer import DownloadError, download_file

FAST = {"chunk_size": 1024, "timeout": 5.0, "retries": 2, "retry_wait": 0.0}
SUBJECTS = ("IXI002-Guys-0828", "IXI012-HH-1211")


# --------------------------------------------------------------------------- test server


class _FileServer(http.server.HTTPServer):
    """Serves ``files`` under ``/IXI/``; records requests; can cut one transfer short."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cut_after: dict[str, int] = {}  # name -> bytes sent before closing, applied once
        self.honor_range = True

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/IXI/"

    def count(self, name: str) -> int:
        return sum(1 for path, _ in self.requests if path == name)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _FileServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        name = self.path.removeprefix("/IXI/")
        rng = self.headers.get("Range")
        self.server.requests.append((name, rng))
        data = self.server.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if match and self.server.honor_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.server.cut_after.pop(name, None)
        self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()


@pytest.fixture
def server() -> Iterator[_FileServer]:
    httpd = _FileServer()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------- archives


def _tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _fake_nifti(subject: str, contrast: str) -> bytes:
    return gzip.compress(f"not really a NIfTI: {subject} {contrast}\n".encode() * 40, mtime=0)


def _ixi_tar(contrast: str, prefix: str = "") -> bytes:
    """A flat archive as IXI ships it: ``IXI002-Guys-0828-T1.nii.gz`` at the top level."""
    return _tar_bytes([_file(f"{prefix}{s}-{contrast}.nii.gz", _fake_nifti(s, contrast)) for s in SUBJECTS])


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def ixi_server(server: _FileServer) -> _FileServer:
    server.files["IXI-T1.tar"] = _ixi_tar("T1")
    server.files[IXI_DEMOGRAPHICS] = b"fake xls bytes\n" * 10
    return server


# --------------------------------------------------------------------------- checksum table


def test_packaged_table_lists_every_archive_with_unknown_checksums() -> None:
    table = load_checksum_table()
    expected = {f"IXI-{m}.tar" for m in dl.IXI_CONTRASTS} | {IXI_DEMOGRAPHICS}
    assert set(table) == expected
    for entry in table.values():
        assert entry.sha256 is None and entry.size_bytes is None  # never invented
        assert "trust on first use" in entry.note


def test_table_rejects_a_malformed_sha(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_text("file\tsize_bytes\tsha256\tnote\nIXI-T1.tar\t12\tabc\tx\n")
    with pytest.raises(ValueError, match=r"IXI-T1\.tar: sha256 'abc'"):
        load_checksum_table(path)


# --------------------------------------------------------------------------- fetch_ixi


def test_fetch_ixi_downloads_pins_and_extracts_native_layout(
    ixi_server: _FileServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dest = tmp_path / "ixi"
    with caplog.at_level(logging.WARNING, logger=checksums.__name__):
        out = fetch_ixi(dest, contrasts=("T1",), base_url=ixi_server.base_url, **FAST)

    assert out == dest
    for subject in SUBJECTS:
        image = dest / "IXI-T1" / f"{subject}-T1.nii.gz"
        assert image.read_bytes() == _fake_nifti(subject, "T1")
    assert (dest / IXI_DEMOGRAPHICS).read_bytes() == ixi_server.files[IXI_DEMOGRAPHICS]
    lock = json.loads((dest / LOCK_FILE_NAME).read_text())
    archive = ixi_server.files["IXI-T1.tar"]
    assert lock["IXI-T1.tar"] == {"sha256": _sha(archive), "size": len(archive)}
    assert lock[IXI_DEMOGRAPHICS]["sha256"] == _sha(ixi_server.files[IXI_DEMOGRAPHICS])
    assert "pinned" in caplog.text and "IXI-T1.tar" in caplog.text
    marker = json.loads((dest / "IXI-T1" / COMPLETE_MARKER).read_text())
    assert marker["archive_sha256"] == _sha(archive)
    assert marker["files"] == sorted(f"{s}-T1.nii.gz" for s in SUBJECTS)
    assert not list(dest.glob("*.part")) and not list(dest.glob(".*extracting"))


def test_second_fetch_requests_nothing(ixi_server: _FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "ixi"
    fetch_ixi(dest, contrasts=("T1",), base_url=ixi_server.base_url, **FAST)
    assert len(ixi_server.requests) == 2
    image = dest / "IXI-T1" / f"{SUBJECTS[0]}-T1.nii.gz"
    mtime = image.stat().st_mtime_ns

    fetch_ixi(dest, contrasts=("T1",), base_url=ixi_server.base_url, **FAST)
    assert len(ixi_server.requests) == 2
    assert image.stat().st_mtime_ns == mtime  # not re-extracted either

    # A lost extraction is rebuilt from the verified archive, still without a request.
    (dest / "IXI-T1" / COMPLETE_MARKER).unlink()
    fetch_ixi(dest, contrasts=("T1",), base_url=ixi_server.base_url, **FAST)
    assert len(ixi_server.requests) == 2
    assert (dest / "IXI-T1" / COMPLETE_MARKER).is_file()


def test_fetch_without_archives_kept_is_still_idempotent(ixi_server: _FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "ixi"
    kwargs = {"contrasts": ("T1",), "base_url": ixi_server.base_url, "keep_archives": False, **FAST}
    fetch_ixi(dest, **kwargs)
    assert not (dest / "IXI-T1.tar").exists()
    fetch_ixi(dest, **kwargs)
    assert ixi_server.count("IXI-T1.tar") == 1


def test_fetch_rejects_unknown_contrast(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="FLAIR"):
        fetch_ixi(tmp_path, contrasts=("T1", "FLAIR"), base_url="http://127.0.0.1:9/")


def test_fetch_with_table_sha_mismatch_names_file_and_keeps_nothing(
    ixi_server: _FileServer, tmp_path: Path
) -> None:
    dest = tmp_path / "ixi"
    wrong = "0" * 64
    table = {"IXI-T1.tar": ChecksumEntry("IXI-T1.tar", None, wrong, "test")}
    with pytest.raises(ChecksumError) as info:
        fetch_ixi(dest, ("T1",), ixi_server.base_url, checksums=table, demographics=False, **FAST)
    message = str(info.value)
    assert "IXI-T1.tar" in message and wrong in message
    assert _sha(ixi_server.files["IXI-T1.tar"]) in message
    assert not (dest / "IXI-T1.tar").exists() and not (dest / "IXI-T1.tar.part").exists()
    assert not (dest / "IXI-T1").exists()
    assert not (dest / LOCK_FILE_NAME).exists()  # a table sha is never overridden by pinning


def test_fetch_with_lock_sha_mismatch_names_file_and_keeps_nothing(
    ixi_server: _FileServer, tmp_path: Path
) -> None:
    dest = tmp_path / "ixi"
    dest.mkdir()
    wrong = "f" * 64
    lock = {"IXI-T1.tar": {"sha256": wrong, "size": len(ixi_server.files["IXI-T1.tar"])}}
    (dest / LOCK_FILE_NAME).write_text(json.dumps(lock))
    with pytest.raises(ChecksumError, match=rf"IXI-T1\.tar: sha256 mismatch: expected {wrong}"):
        fetch_ixi(dest, ("T1",), ixi_server.base_url, demographics=False, **FAST)
    assert not (dest / "IXI-T1.tar").exists() and not (dest / "IXI-T1.tar.part").exists()
    assert not (dest / "IXI-T1").exists()
    assert json.loads((dest / LOCK_FILE_NAME).read_text()) == lock  # pin not overwritten


def test_fetch_refuses_a_malicious_archive_from_the_server(server: _FileServer, tmp_path: Path) -> None:
    link = tarfile.TarInfo("IXI012-HH-1211-T1.nii.gz")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    server.files["IXI-T1.tar"] = _tar_bytes([_file("IXI002-Guys-0828-T1.nii.gz", b"ok"), (link, None)])
    dest = tmp_path / "ixi"
    with pytest.raises(UnsafeArchiveError, match=r"IXI012-HH-1211-T1\.nii\.gz.*symlink"):
        fetch_ixi(dest, ("T1",), server.base_url, demographics=False, **FAST)
    assert not (dest / "IXI-T1").exists()
    assert [p.name for p in dest.iterdir() if p.name.startswith(".IXI-T1")] == []


def _evil_tar() -> bytes:
    link = tarfile.TarInfo("IXI012-HH-1211-T1.nii.gz")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return _tar_bytes([_file("IXI002-Guys-0828-T1.nii.gz", b"ok"), (link, None)])


def _assert_nothing_kept(dest: Path) -> None:
    """A refused archive leaves no final-named file, no partial file, no pin and no folder."""
    assert not (dest / "IXI-T1.tar").exists() and not (dest / "IXI-T1.tar.part").exists()
    assert not (dest / "IXI-T1").exists()
    assert [p.name for p in dest.iterdir() if p.name.startswith(".IXI-T1")] == []
    lock = dest / LOCK_FILE_NAME
    assert not lock.exists() or "IXI-T1.tar" not in json.loads(lock.read_text())


@pytest.mark.parametrize(
    ("bad", "error", "words"),
    [
        pytest.param(_evil_tar(), UnsafeArchiveError, "symlink", id="unsafe"),
        pytest.param(
            b"<html>503 mirror maintenance</html>\n" * 30,
            archive_module.CorruptArchiveError,
            "not a readable tar archive",
            id="not-a-tar",
        ),
        pytest.param(
            _ixi_tar("T1")[:1500],
            archive_module.CorruptArchiveError,
            "no end-of-archive marker",
            id="cut-between-members",
        ),
        pytest.param(
            _ixi_tar("T1")[:1100],
            archive_module.CorruptArchiveError,
            "truncated or corrupt",
            id="cut-inside-a-header",
        ),
    ],
)
def test_refused_archive_keeps_no_pin_and_recovers_once_the_mirror_is_fixed(
    server: _FileServer, tmp_path: Path, bad: bytes, error: type[Exception], words: str
) -> None:
    dest = tmp_path / "ixi"
    server.files["IXI-T1.tar"] = bad
    with pytest.raises(error, match=re.escape(words)):
        fetch_ixi(dest, ("T1",), server.base_url, demographics=False, **FAST)
    _assert_nothing_kept(dest)
    with pytest.raises(error):  # the same bad file again: refused again, still nothing kept
        fetch_ixi(dest, ("T1",), server.base_url, demographics=False, **FAST)
    _assert_nothing_kept(dest)

    server.files["IXI-T1.tar"] = good = _ixi_tar("T1")  # the mirror is fixed
    fetch_ixi(dest, ("T1",), server.base_url, demographics=False, **FAST)
    assert json.loads((dest / LOCK_FILE_NAME).read_text())["IXI-T1.tar"]["sha256"] == _sha(good)
    assert (dest / "IXI-T1.tar").read_bytes() == good
    assert json.loads((dest / "IXI-T1" / COMPLETE_MARKER).read_text())["archive"] == "IXI-T1.tar"
    for subject in SUBJECTS:
        assert (dest / "IXI-T1" / f"{subject}-T1.nii.gz").read_bytes() == _fake_nifti(subject, "T1")


def test_refused_archive_pinned_by_an_earlier_version_is_dropped_with_its_pin(
    server: _FileServer, tmp_path: Path
) -> None:
    dest = tmp_path / "ixi"
    dest.mkdir()
    evil = _evil_tar()
    (dest / "IXI-T1.tar").write_bytes(evil)  # what a run before the fix left behind
    (dest / LOCK_FILE_NAME).write_text(json.dumps({"IXI-T1.tar": {"sha256": _sha(evil), "size": len(evil)}}))
    server.files["IXI-T1.tar"] = good = _ixi_tar("T1")
    with pytest.raises(UnsafeArchiveError):
        fetch_ixi(dest, ("T1",), server.base_url, demographics=False, **FAST)
    _assert_nothing_kept(dest)
    assert server.requests == []  # the local archive was checked, not re-fetched
    fetch_ixi(dest, ("T1",), server.base_url, demographics=False, **FAST)
    assert json.loads((dest / LOCK_FILE_NAME).read_text())["IXI-T1.tar"]["sha256"] == _sha(good)


def test_size_mismatch_from_the_lock_names_the_lock_file(ixi_server: _FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "ixi"
    dest.mkdir()
    lock = {"IXI-T1.tar": {"sha256": "e" * 64, "size": 1234}}
    (dest / LOCK_FILE_NAME).write_text(json.dumps(lock))
    with pytest.raises(ChecksumError) as info:
        fetch_ixi(dest, ("T1",), ixi_server.base_url, demographics=False, **FAST)
    message = str(info.value)
    assert f"IXI-T1.tar: size mismatch: expected 1234 (from {dest / LOCK_FILE_NAME})" in message
    assert "the checksum table" not in message
    assert "delete its entry there to pin the new one" in message
    assert json.loads((dest / LOCK_FILE_NAME).read_text()) == lock
    assert not (dest / "IXI-T1.tar").exists() and not (dest / "IXI-T1.tar.part").exists()


# --------------------------------------------------------------------------- download_file


def test_truncated_transfer_resumes_with_range(server: _FileServer, tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    server.files["big.bin"] = data
    server.cut_after["big.bin"] = 3000
    result = download_file(
        server.base_url + "big.bin", tmp_path / "big.bin", lock_path=tmp_path / "lock.json", **FAST
    )
    assert server.requests == [("big.bin", None), ("big.bin", "bytes=3000-")]
    assert result.downloaded and result.sha256 == _sha(data) and result.size_bytes == len(data)
    assert (tmp_path / "big.bin").read_bytes() == data
    assert not (tmp_path / "big.bin.part").exists()


def test_partial_file_from_an_earlier_run_is_resumed(server: _FileServer, tmp_path: Path) -> None:
    data = b"0123456789" * 500
    server.files["a.bin"] = data
    (tmp_path / "a.bin.part").write_bytes(data[:1234])
    download_file(server.base_url + "a.bin", tmp_path / "a.bin", expected_sha256=_sha(data), **FAST)
    assert server.requests == [("a.bin", "bytes=1234-")]
    assert (tmp_path / "a.bin").read_bytes() == data


def test_server_ignoring_range_restarts_from_scratch(server: _FileServer, tmp_path: Path) -> None:
    data = b"abcdefgh" * 600
    server.files["a.bin"] = data
    server.honor_range = False
    (tmp_path / "a.bin.part").write_bytes(b"garbage!" * 100)  # would corrupt the file if appended to
    result = download_file(server.base_url + "a.bin", tmp_path / "a.bin", **FAST)
    assert server.requests == [("a.bin", "bytes=800-")]
    assert result.sha256 == _sha(data)
    assert (tmp_path / "a.bin").read_bytes() == data


def test_complete_partial_file_is_verified_after_416(server: _FileServer, tmp_path: Path) -> None:
    data = b"xyz" * 1000
    server.files["a.bin"] = data
    (tmp_path / "a.bin.part").write_bytes(data)
    result = download_file(server.base_url + "a.bin", tmp_path / "a.bin", expected_sha256=_sha(data), **FAST)
    assert result.path.read_bytes() == data
    assert server.requests == [("a.bin", f"bytes={len(data)}-")]


def test_size_mismatch_with_table_is_refused_before_download(server: _FileServer, tmp_path: Path) -> None:
    server.files["a.bin"] = b"x" * 5000
    with pytest.raises(
        ChecksumError,
        match=r"a\.bin: size mismatch: expected 4999 .*got 5000 \(from the size the server announced\)",
    ):
        download_file(server.base_url + "a.bin", tmp_path / "a.bin", expected_size=4999, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_repeated_cuts_give_up_and_keep_the_partial_file(server: _FileServer, tmp_path: Path) -> None:
    data = b"q" * 5000

    class _AlwaysCut(dict[str, int]):
        def pop(self, key: str, default: object = None) -> int:  # type: ignore[override]
            return 1000

    server.files["a.bin"] = data
    server.cut_after = _AlwaysCut()
    with pytest.raises(DownloadError, match="gave up after 3 attempt"):
        download_file(server.base_url + "a.bin", tmp_path / "a.bin", **FAST)
    assert not (tmp_path / "a.bin").exists()
    assert (tmp_path / "a.bin.part").stat().st_size == 3000  # resumed twice, then kept for next run
    assert [r for _, r in server.requests] == [None, "bytes=1000-", "bytes=2000-"]


def test_http_404_is_not_retried(server: _FileServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(server.base_url + "missing.bin", tmp_path / "missing.bin", **FAST)
    assert len(server.requests) == 1


def test_existing_file_is_checked_against_the_lock(server: _FileServer, tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"tampered")
    lock = tmp_path / "lock.json"
    lock.write_text(json.dumps({"a.bin": {"sha256": _sha(b"original"), "size": 8}}))
    with pytest.raises(ChecksumError, match=r"a\.bin: sha256 mismatch"):
        download_file(server.base_url + "a.bin", tmp_path / "a.bin", lock_path=lock, **FAST)
    assert not (tmp_path / "a.bin").exists()
    assert server.requests == []


# --------------------------------------------------------------------------- safe_extract_tar


def _symlink() -> tarfile.TarInfo:
    info = tarfile.TarInfo("evil_link")
    info.type, info.linkname = tarfile.SYMTYPE, "../../outside.txt"
    return info


def _hardlink() -> tarfile.TarInfo:
    info = tarfile.TarInfo("evil_hardlink")
    info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
    return info


def _device() -> tarfile.TarInfo:
    info = tarfile.TarInfo("evil_null")
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info


def _fifo() -> tarfile.TarInfo:
    info = tarfile.TarInfo("evil_fifo")
    info.type = tarfile.FIFOTYPE
    return info


@pytest.mark.parametrize(
    ("make_member", "payload", "reason"),
    [
        pytest.param(lambda tmp: tarfile.TarInfo(str(tmp / "abs_evil.txt")), b"x", "absolute", id="absolute"),
        pytest.param(lambda tmp: tarfile.TarInfo("sub/../../evil.txt"), b"x", r"'\.\.'", id="traversal"),
        pytest.param(lambda tmp: _symlink(), None, "symlink", id="symlink"),
        pytest.param(lambda tmp: _hardlink(), None, "hardlink", id="hardlink"),
        pytest.param(lambda tmp: _device(), None, "character device", id="chardev"),
        pytest.param(lambda tmp: _fifo(), None, "fifo", id="fifo"),
    ],
)
def test_unsafe_member_is_refused_and_nothing_is_extracted(
    tmp_path: Path, make_member, payload: bytes | None, reason: str
) -> None:
    evil = make_member(tmp_path)
    archive = tmp_path / "evil.tar"
    # A harmless file first: a checker that looked at members one by one while extracting would
    # already have written it.
    archive.write_bytes(_tar_bytes([_file("IXI002-Guys-0828-T1.nii.gz", b"ok"), (evil, payload)]))
    out = tmp_path / "work" / "IXI-T1"
    with pytest.raises(UnsafeArchiveError, match=rf"{re.escape(repr(evil.name))}: {reason}"):
        safe_extract_tar(archive, out)
    assert not out.exists()
    assert list((tmp_path / "work").iterdir()) == []  # no temp folder, no marker left behind
    assert not (tmp_path / "abs_evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "outside.txt").exists()


def test_interrupted_extraction_leaves_nothing_that_looks_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "a.tar"
    archive.write_bytes(_ixi_tar("T1"))
    out = tmp_path / "work" / "IXI-T1"
    calls = []
    real_copy = archive_module.shutil.copyfileobj

    def copy_then_fail(src, dst, length=0) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # e.g. the job was killed mid-archive
        real_copy(src, dst, length)

    monkeypatch.setattr(archive_module.shutil, "copyfileobj", copy_then_fail)
    with pytest.raises(KeyboardInterrupt):
        safe_extract_tar(archive, out)
    assert not out.exists()
    assert list((tmp_path / "work").iterdir()) == []


def test_extraction_replaces_a_stale_tree_and_strips_a_top_folder(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar"
    archive.write_bytes(_ixi_tar("T2", prefix="./IXI-T2/"))
    out = tmp_path / "IXI-T2"
    out.mkdir()
    (out / "stale.nii.gz").write_bytes(b"half-written")
    files = safe_extract_tar(archive, out, strip_prefix="IXI-T2", archive_sha256="a" * 64)
    assert files == sorted(f"{s}-T2.nii.gz" for s in SUBJECTS)
    assert sorted(p.name for p in out.iterdir()) == sorted([COMPLETE_MARKER, *files])
    marker = json.loads((out / COMPLETE_MARKER).read_text())
    assert marker == {"archive": "a.tar", "archive_sha256": "a" * 64, "n_files": 2, "files": files}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
