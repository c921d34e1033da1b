"""A TCP proxy the chaos tests can break: in front of PostgreSQL or a broker, on its own port.

    proxy = TcpProxy(5432).start()     # processes connect to 127.0.0.1:<proxy.port>
    proxy.cut()                        # the server is gone: listener closed, connections reset
    proxy.restore()                    # it is back on the same port
    proxy.pause() / proxy.resume()     # the server hangs: connections stay open, nothing moves

Cutting a proxy instead of stopping the machine's shared PostgreSQL or Redis breaks only the
processes of the scenario that were pointed at it; the test process itself keeps a direct
connection to check the end state.
"""

import contextlib
import selectors
import socket
import threading

from tests.harness import free_port


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()

    def start(self) -> "TcpProxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut: the listener was closed
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            pair = (client, server)
            with self._lock:
                cut_meanwhile = self._listener is not listener
                if not cut_meanwhile:
                    self._pairs.add(pair)
            if cut_meanwhile:  # accepted just before the cut: it must not outlive it
                self._close(pair)
                return
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()

    def _pump(self, pair: tuple[socket.socket, socket.socket]) -> None:
        """Both directions of one connection in one thread; it ends when either side closes."""
        client, server = pair
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, server)
        selector.register(server, selectors.EVENT_READ, client)
        try:
            while pair in self._pairs:
                self._flowing.wait()  # paused: read nothing, so both ends' buffers fill and block
                for key, _ in selector.select(timeout=0.2):
                    if not self._flowing.is_set():
                        break
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            selector.close()
            self._close(pair)

    def _close(self, pair: tuple[socket.socket, socket.socket]) -> None:
        with self._lock:
            self._pairs.discard(pair)
        for sock in pair:
            with contextlib.suppress(OSError):
                # RST rather than FIN: the peer sees the server vanish, as when its host dies
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.close()

    def cut(self) -> None:
        """No new connections (refused) and every open one reset."""
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                # close() alone leaves it listening while the accept thread is blocked in it
                listener.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                listener.close()
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._close(pair)

    def restore(self) -> None:
        self.start()

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def stop(self) -> None:
        self.resume()
        self.cut()
