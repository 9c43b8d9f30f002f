"""A tiny loopback HTTP server with the faults the download stage must classify."""
from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


def png(w: int = 40, h: int = 30, color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "PNG")
    return buf.getvalue()


def bomb_png(w: int = 30000, h: int = 30000) -> bytes:
    """A valid PNG header claiming w x h pixels with a tiny (truncated) body."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b"")


class LoopbackServer:
    """An HTTP server bound to 127.0.0.1 only, on an ephemeral port, serving on a daemon thread
    from construction until ``close()`` (or the end of its ``with`` block); request logging is
    silent. Each GET is passed to ``handle(req)`` -- the callable given, else the subclass's
    method -- with the ``BaseHTTPRequestHandler`` of the request."""

    def __init__(self, handle: Callable[[BaseHTTPRequestHandler], object] | None = None, *,
                 protocol_version: str = "HTTP/1.1"):
        serve = handle or self.handle

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):  # noqa: N802
                serve(self)

        Handler.protocol_version = protocol_version
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port: int = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._closed = False
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def handle(self, req: BaseHTTPRequestHandler) -> object:
        raise NotImplementedError("pass handle= or override handle()")

    def url(self, path: str) -> str:
        return self.base_url + path

    @staticmethod
    def reply(req: BaseHTTPRequestHandler, code: int, body: bytes = b"", ctype: str | None = None,
              headers: dict[str, str] | None = None, length: bool = True, close: bool = True) -> None:
        """Send a whole response: Content-Type (if ``ctype``), Content-Length (if ``length``),
        ``headers``, then ``Connection: close`` (if ``close``), then ``body``."""
        req.send_response(code)
        if ctype is not None:
            req.send_header("Content-Type", ctype)
        if length:
            req.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            req.send_header(k, v)
        if close:
            req.send_header("Connection", "close")
        req.end_headers()
        req.wfile.write(body)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.httpd.shutdown()
            self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FaultServer(LoopbackServer):
    """Routes: /img/N.png, /404, /500, /slow, /drip, /text, /noai, /private/N.png (robots.txt
    disallows), /redir/N (-> /img/N.png), /redir-private (-> 127.0.0.2), /loop, /big,
    /big-chunked, /bomb, /flaky/N (503 twice per path, then the image)."""

    def __init__(self, flaky_failures: int = 2):
        self.hits: Counter = Counter()
        self.flaky_failures = flaky_failures
        super().__init__()

    def handle(self, req):
        p = req.path
        self.hits[p] += 1
        try:
            self.route(req, p)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def route(self, req, p):
        def send(code, body=b"", ctype="image/png", headers=None, length=True):
            self.reply(req, code, body, ctype, headers, length)

        if p == "/robots.txt":
            return send(200, b"User-agent: *\nDisallow: /private/\n", "text/plain")
        if p.startswith("/img/") or p.startswith("/private/"):
            n = int(p.rsplit("/", 1)[1].split(".")[0])
            return send(200, png(40 + n, 30, (n * 7 % 256, 80, 120)))
        if p.startswith("/slowimg/"):
            time.sleep(0.15)
            return send(200, png(40, 30, (int(p.rsplit("/", 1)[1]) % 256, 9, 9)))
        if p in ("/404", "/500"):
            return send(int(p[1:]), b"no", "text/plain")
        if p == "/slow":
            time.sleep(3)
            return send(200, png())
        if p == "/drip":
            req.send_response(200)
            req.send_header("Content-Type", "image/png")
            req.end_headers()
            for _ in range(40):
                req.wfile.write(b"x" * 10)
                req.wfile.flush()
                time.sleep(0.1)
            return
        if p == "/text":
            return send(200, b"<html>not an image</html>", "text/html")
        if p == "/noai":
            return send(200, png(), headers={"X-Robots-Tag": "noai"})
        if p.startswith("/redir/"):
            return send(302, b"", headers={"Location": "/img/" + p.rsplit("/", 1)[1] + ".png"})
        if p == "/redir-private":
            return send(302, b"", headers={"Location": f"http://127.0.0.2:{self.port}/img/1.png"})
        if p == "/redir-file":
            return send(302, b"", headers={"Location": "file:///etc/passwd"})
        if p == "/loop":
            return send(302, b"", headers={"Location": "/loop"})
        if p == "/big":
            return send(200, b"\0" * 300_000)
        if p == "/big-chunked":
            return send(200, b"\0" * 300_000, length=False)
        if p == "/bomb":
            return send(200, bomb_png())
        if p.startswith("/flaky/"):
            if self.hits[p] <= self.flaky_failures:
                return send(503, b"busy", "text/plain")
            return send(200, png(50, 50))
        return send(404, b"", "text/plain")


class RawServer:
    """A loopback TCP server whose ``handler(conn, stop)`` writes raw bytes (for faults an
    HTTP server library would not produce). ``stop`` is set on exit so handlers end quickly;
    ``requests`` collects the first bytes each connection sent."""

    def __init__(self, handler, tls_context=None):
        import socket

        self.handler, self.tls = handler, tls_context
        self.stop = threading.Event()
        self.requests: list[bytes] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.base_url = f"{'https' if tls_context else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        try:
            conn.settimeout(5)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            self.requests.append(data)
            self.handler(conn, self.stop, data)
        except OSError:
            pass
        finally:
            conn.close()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def self_signed_tls(tmp_path):
    """(server SSLContext, client SSLContext trusting it) for 127.0.0.1, made with ``cryptography``."""
    import datetime
    import ipaddress
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = tmp_path / "cert.pem"
    key_pem = tmp_path / "key.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_pem, key_pem)
    client = ssl.create_default_context(cafile=str(cert_pem))
    return server, client
