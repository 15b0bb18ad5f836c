"""The app's start-up probe survives a slow first answer (a loaded CI machine), where Gradio's own gives up."""

import http.server
import threading

from dashboard.app import _patient_url_ok


class SlowFirstHead(http.server.BaseHTTPRequestHandler):
    delays = [4.0]  # the first HEAD takes longer than Gradio's single 3 s try

    def do_HEAD(self):  # noqa: N802 - http.server's naming
        import time

        if self.delays:
            time.sleep(self.delays.pop())
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_probe_waits_out_a_slow_first_answer():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowFirstHead)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        assert _patient_url_ok(url, attempts=3, timeout_s=6.0)
    finally:
        server.shutdown()
        server.server_close()


def test_probe_reports_a_closed_port():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowFirstHead)
    port = server.server_address[1]
    server.server_close()
    assert not _patient_url_ok(f"http://127.0.0.1:{port}/", attempts=2, timeout_s=1.0)
