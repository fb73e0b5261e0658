"""Hostile HTTP/2 and TCP clients, one attack per run, for the gateway's
connection tests (crates/portcullis-gateway/tests/it/hostile_clients.rs).

Usage: python h2_attacks.py ATTACK PORT [--tls CAFILE] [--seconds N] [--path P]
       [--streams N] [--source ADDR]

Prints one JSON line: what happened (how long until the server closed the
connection, the GOAWAY error code if one came, frames answered, ...).
Every attack is bounded in time and talks to 127.0.0.1 only.
"""

import argparse
import json
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def connect(args, alpn=("h2",)):
    s = socket.create_connection(("127.0.0.1", args.port), timeout=10, source_address=(args.source, 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if args.tls:
        ctx = ssl.create_default_context(cafile=args.tls)
        ctx.set_alpn_protocols(list(alpn))
        s = ctx.wrap_socket(s, server_hostname="localhost")
    return s


def wait_closed(s, limit, on_data=None):
    """Reads until the peer closes (or `limit` seconds): (seconds, bytes read)."""
    start = time.monotonic()
    got = b""
    s.settimeout(0.2)
    while time.monotonic() - start < limit:
        try:
            d = s.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            continue
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
            return time.monotonic() - start, got
        if not d:
            return time.monotonic() - start, got
        got += d
        if on_data:
            on_data(d)
    return None, got


class Frames:
    """Follows the server's frames as bytes arrive; remembers a GOAWAY."""

    def __init__(self):
        self.buf = b""
        self.goaway = None

    def feed(self, data):
        self.buf += data
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[0:3], "big")
            if len(self.buf) < 9 + length:
                return
            if self.buf[3] == 7 and length >= 8 and self.goaway is None:
                self.goaway = int.from_bytes(self.buf[13:17], "big")
            self.buf = self.buf[9 + length:]


def h2_conn(s, window=None):
    c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    c.initiate_connection()
    if window:
        c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
    s.sendall(c.data_to_send())
    return c


def attack(args):
    limit = args.seconds
    if args.attack == "silent-tcp":
        s = socket.create_connection(("127.0.0.1", args.port), timeout=10, source_address=(args.source, 0))
        closed, _ = wait_closed(s, limit)
        return {"closed_after": closed}
    if args.attack == "silent-tls":
        s = connect(args)
        closed, _ = wait_closed(s, limit)
        return {"closed_after": closed}
    if args.attack == "partial-preface":
        s = connect(args)
        s.sendall(PREFACE[:10])
        closed, _ = wait_closed(s, limit)
        return {"closed_after": closed}
    if args.attack == "idle-pings":
        # A well-behaved HTTP/2 client with nothing to ask: it answers the
        # server's PINGs and sends its own now and then.
        s = connect(args)
        c = h2_conn(s)
        # One request first, so the idle deadline is the one tested.
        c.send_headers(1, [(":method", "GET"), (":path", args.path), (":scheme", "https" if args.tls else "http"), (":authority", "localhost")], end_stream=True)
        s.sendall(c.data_to_send())
        start = time.monotonic()
        s.settimeout(0.2)
        pings = 0
        while time.monotonic() - start < limit:
            try:
                d = s.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                d = None
            except OSError:
                return {"closed_after": time.monotonic() - start, "pings": pings}
            if d == b"":
                return {"closed_after": time.monotonic() - start, "pings": pings}
            if d:
                try:
                    c.receive_data(d)
                except Exception:
                    pass
            # One PING of its own every half second: polite, not a flood.
            if time.monotonic() - start >= pings * 0.5:
                try:
                    c.ping(b"12345678")
                except h2.exceptions.ProtocolError:
                    # The server said GOAWAY: closed as far as HTTP/2 goes.
                    return {"closed_after": time.monotonic() - start, "pings": pings}
                pings += 1
            try:
                s.sendall(c.data_to_send())
            except OSError:
                return {"closed_after": time.monotonic() - start, "pings": pings}
        return {"closed_after": None, "pings": pings}
    if args.attack in ("ping-flood", "settings-flood", "empty-data-flood", "reset-flood"):
        s = connect(args)
        c = h2_conn(s)
        if args.attack == "ping-flood":
            unit = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"\x00" * 8
        elif args.attack == "settings-flood":
            unit = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        elif args.attack == "empty-data-flood":
            c.send_headers(1, [(":method", "POST"), (":path", args.path), (":scheme", "https" if args.tls else "http"), (":authority", "localhost")])
            s.sendall(c.data_to_send())
            unit = b"\x00\x00\x00\x00\x00\x00\x00\x00\x01"
        else:
            unit = b"\x00\x00\x04\x03\x00\x00\x00\x00\x01\x00\x00\x00\x08"
        batch = unit * 500
        start = time.monotonic()
        sent = 0
        frames = Frames()
        s.settimeout(0)
        closed = None
        while time.monotonic() - start < limit:
            try:
                s.sendall(batch)
                sent += 500
            except (BlockingIOError, ssl.SSLWantWriteError):
                pass
            except OSError:
                closed = time.monotonic() - start
                break
            try:
                d = s.recv(1 << 20)
                if d == b"":
                    closed = time.monotonic() - start
                    break
                frames.feed(d)
            except (BlockingIOError, ssl.SSLWantReadError):
                pass
            except OSError:
                closed = time.monotonic() - start
                break
        if closed is not None:
            # Whatever is left in the socket (the GOAWAY) is read too.
            s.settimeout(0.5)
            try:
                while True:
                    d = s.recv(65536)
                    if not d:
                        break
                    frames.feed(d)
            except OSError:
                pass
        return {"closed_after": closed, "frames_sent": sent, "goaway": frames.goaway}
    if args.attack == "slow-reader":
        # Huge windows, many streams for a large response, and then never
        # a byte read: the server must not buffer without bound, and must
        # close the connection.
        s = connect(args)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c = h2_conn(s, window=2**31 - 1)
        c.increment_flow_control_window(2**31 - 1 - 65535)
        for i in range(args.streams):
            sid = c.get_next_available_stream_id()
            c.send_headers(sid, [(":method", "GET"), (":path", args.path), (":scheme", "https" if args.tls else "http"), (":authority", "localhost")], end_stream=True)
        s.sendall(c.data_to_send())
        # Not reading, for the whole run: the test watches the server's
        # memory and its log meanwhile.
        time.sleep(limit)
        return {"streams": args.streams}
    if args.attack == "stalled-with-traffic":
        # A stream whose window never opens, kept company by small requests
        # on the same connection every half second: the stalled one must
        # still be held to send_timeout.
        s = connect(args)
        c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        c.initiate_connection()
        c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, [(":method", "GET"), (":path", args.path), (":scheme", "https" if args.tls else "http"), (":authority", "localhost")], end_stream=True)
        s.sendall(c.data_to_send())
        start = time.monotonic()
        s.settimeout(0.1)
        sent = 0
        while time.monotonic() - start < limit:
            try:
                d = s.recv(65536)
                if d == b"":
                    return {"closed_after": time.monotonic() - start, "requests": sent}
                try:
                    c.receive_data(d)
                except Exception:
                    pass
            except (socket.timeout, ssl.SSLWantReadError):
                pass
            except OSError:
                return {"closed_after": time.monotonic() - start, "requests": sent}
            if time.monotonic() - start >= sent * 0.5:
                try:
                    other = c.get_next_available_stream_id()
                    c.send_headers(other, [(":method", "GET"), (":path", "/ok"), (":scheme", "https" if args.tls else "http"), (":authority", "localhost")], end_stream=True)
                    s.sendall(c.data_to_send())
                    sent += 1
                except h2.exceptions.ProtocolError:
                    return {"closed_after": time.monotonic() - start, "requests": sent}
                except OSError:
                    return {"closed_after": time.monotonic() - start, "requests": sent}
        return {"closed_after": None, "requests": sent}
    if args.attack == "unsent-bodies":
        # Streams that announce a body and never send it.
        s = connect(args)
        c = h2_conn(s)
        for i in range(args.streams):
            sid = c.get_next_available_stream_id()
            c.send_headers(sid, [(":method", "POST"), (":path", args.path), (":scheme", "https" if args.tls else "http"), (":authority", "localhost"), ("content-length", "10")])
        s.sendall(c.data_to_send())
        time.sleep(limit)
        return {"streams": args.streams}
    if args.attack == "h2-without-alpn":
        # TLS with ALPN http/1.1 (or plain without h2c), then the HTTP/2
        # preface: the server must not speak HTTP/2.
        s = connect(args, alpn=("http/1.1",))
        s.sendall(PREFACE)
        closed, got = wait_closed(s, limit)
        return {"closed_after": closed, "answer": got[:64].decode("latin-1")}
    raise SystemExit(f"unknown attack {args.attack}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("attack")
    p.add_argument("port", type=int)
    p.add_argument("--tls")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--path", default="/")
    p.add_argument("--streams", type=int, default=50)
    p.add_argument("--source", default="127.0.0.1")
    args = p.parse_args()
    out = attack(args)
    out["attack"] = args.attack
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
