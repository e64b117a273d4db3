"""Shared by the browser suites (tests/browser/test_*.py): starts the real
server on a loopback port with web.root pointing at the tree's web/ dir,
Debian's Chromium through chromedriver (python3-selenium), and the CLI in
batch mode; everything started here is stopped on every exit path.

Arguments of every suite: SERVER_BIN CLI_BIN PLUGIN_DIR SOURCE_DIR
"""
import atexit
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"
WAIT_S = 20

_cleanups = []


def cleanup_all():
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception as e:  # keep stopping the rest
            print(f"cleanup: {e}", file=sys.stderr)


atexit.register(cleanup_all)
# SIGTERM (ctest's timeout) runs the same cleanup through SystemExit.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Args:
    def __init__(self, argv):
        if len(argv) != 5:
            sys.exit(f"usage: {argv[0]} SERVER_BIN CLI_BIN PLUGIN_DIR SOURCE_DIR")
        self.server_bin, self.cli_bin, self.plugin_dir, self.source_dir = argv[1:]
        self.web_root = os.path.join(self.source_dir, "web")
        self.tmp = tempfile.mkdtemp(prefix="sm-browser-")
        if not os.environ.get("SM_KEEP_TMP"):   # keep it for debugging
            _cleanups.append(lambda: shutil.rmtree(self.tmp, ignore_errors=True))


def make_key(path):
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", path], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.chmod(path, 0o600)


def key_fingerprint(path):
    der = subprocess.run(["openssl", "pkey", "-in", path, "-pubout", "-outform", "DER"],
                         check=True, stdout=subprocess.PIPE).stdout
    import hashlib
    return "sha256:" + hashlib.sha256(der).hexdigest()


class Server:
    """The SafeMessenger server with all five plugins and web.root set."""

    def __init__(self, args, name="server", extra=""):
        self.args = args
        self.dir = os.path.join(args.tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        self.extra = extra
        self.web_conf = f'web = {{ root = "{args.web_root}"; }};'
        self.page_url = None   # where the page is loaded from: the server itself
        self.proc = None
        self.port = 0
        _cleanups.append(self.stop)

    def start(self, key_file, port=0):
        conf = os.path.join(self.dir, "server.conf")
        port_file = os.path.join(self.dir, "port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        with open(conf, "w") as f:
            f.write(f"""
server = {{ port = {port}; bind = "127.0.0.1"; key_file = "{key_file}"; key_bits = 2048; }};
storage = {{ database = "{self.dir}/server.db"; }};
plugins = {{ dir = "{self.args.plugin_dir}";
            load = ["auth", "heartbeat", "rooms", "messaging", "friends"]; }};
log = {{ level = "info"; }};
limits = {{ commands_per_second = 500; command_burst = 1000; bytes_per_second = 10000000;
           bytes_burst = 10000000; }};
auth = {{ registrations_per_hour = 200; }};
{self.web_conf}
{self.extra}
""")
        self.log_path = os.path.join(self.dir, "server.log")
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.args.server_bin, "-c", conf, "--port-file", port_file],
                                     stdout=self.log_file, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.dump_log()
                raise RuntimeError(f"the server exited with {self.proc.returncode}")
            if os.path.exists(port_file):
                with open(port_file) as f:
                    text = f.read().strip()
                if text:
                    self.port = int(text)
                    log(f"server listening on 127.0.0.1:{self.port}")
                    return self.port
            time.sleep(0.05)
        raise RuntimeError("the server did not start within 30 s")

    @property
    def url(self):
        return self.page_url or f"http://127.0.0.1:{self.port}/"

    def page(self, query=""):
        """The page's URL with extra query parameters ("a=b")."""
        if not query:
            return self.url
        return self.url + ("&" if "?" in self.url else "?") + query

    @property
    def ws_url(self):
        return f"ws://127.0.0.1:{self.port}/"

    def stop(self):
        if not self.proc:
            return
        p, self.proc = self.proc, None
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.log_file.close()

    def dump_log(self):
        try:
            with open(self.log_path, "rb") as f:
                tail = f.read()[-6000:].decode("utf-8", "replace")
            print("---- server log (tail) ----\n" + tail, file=sys.stderr)
        except OSError:
            pass


class Browser:
    """One headless Chromium with a fresh profile, driven by chromedriver."""

    def __init__(self, args, name, width=1280, height=900):
        self.name = name
        self.profile = tempfile.mkdtemp(prefix=f"chrome-{name}-", dir=args.tmp)
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--disable-extensions", "--no-default-browser-check",
                  "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                  f"--user-data-dir={self.profile}", f"--window-size={width},{height}"]:
            opts.add_argument(a)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.service = Service(CHROMEDRIVER)
        self.driver = webdriver.Chrome(service=self.service, options=opts)
        self.driver.set_page_load_timeout(30)
        self.driver.set_script_timeout(60)
        _cleanups.append(self.quit)

    def quit(self):
        if self.driver:
            d, self.driver = self.driver, None
            try:
                d.quit()
            except WebDriverException:
                pass
            try:
                self.service.stop()
            except Exception:
                pass

    # ---- element helpers ----
    def el(self, css):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def els(self, css):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css):
        try:
            return self.el(css).text
        except Exception:
            return ""

    def type(self, css, text, clear=True):
        e = self.el(css)
        if clear:
            e.clear()
        e.send_keys(text)

    def click(self, css):
        self.el(css).click()

    def wait(self, what, pred, timeout=WAIT_S):
        end = time.time() + timeout
        last_err = None
        while time.time() < end:
            try:
                r = pred()
                if r:
                    return r
            except (StaleElementReferenceException, WebDriverException) as e:
                last_err = e
            time.sleep(0.1)
        self.report()
        raise AssertionError(f"{self.name}: timed out waiting for {what} ({last_err})")

    def wait_text(self, css, needle, timeout=WAIT_S):
        return self.wait(f"{css} to contain {needle!r}", lambda: needle in self.text(css), timeout)

    def message_texts(self, css="#messages > *"):
        return [e.text for e in self.els(css)]

    def report(self):
        try:
            print(f"---- {self.name}: #status={self.text('#status')!r} #error={self.text('#error')!r}",
                  file=sys.stderr)
            for entry in self.driver.get_log("browser")[-30:]:
                print(f"  console: {entry.get('level')} {entry.get('message')}", file=sys.stderr)
        except Exception:
            pass

    def console_errors(self):
        return [e for e in self.driver.get_log("browser") if e.get("level") == "SEVERE"]

    # ---- the app's own flows ----
    def open(self, url):
        self.driver.get(url)
        self.wait("the page to connect", lambda: "connected" in self.text("#status")
                  or "refused" in self.text("#status"))

    def auth(self, user, password, register):
        self.type("#username", user)
        self.type("#password", password)
        self.click("#register" if register else "#login")
        self.wait_text("#status", f"connected as {user}", timeout=40)


class Cli:
    """safemessenger-cli --batch, commands written to its stdin while it runs,
    its JSON lines collected by a reader thread."""

    def __init__(self, args, server_url, name, password):
        self.name = name
        self.config_dir = os.path.join(args.tmp, f"cli-{name}")
        os.makedirs(self.config_dir, mode=0o700, exist_ok=True)
        env = dict(os.environ, SM_PASSWORD=password)
        self.proc = subprocess.Popen([args.cli_bin, "--batch", "--config-dir", self.config_dir, server_url],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, text=True, bufsize=1)
        self.lines = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_err, daemon=True).start()
        _cleanups.append(self.stop)

    def _read(self):
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                obj = {"kind": "unparsed", "line": line}
            with self.cond:
                self.lines.append(obj)
                self.cond.notify_all()

    def _drain_err(self):
        for _ in self.proc.stderr:
            pass

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait(self, what, pred, timeout=WAIT_S, start=0):
        end = time.time() + timeout
        with self.cond:
            while True:
                for obj in self.lines[start:]:
                    if pred(obj):
                        return obj
                left = end - time.time()
                if left <= 0 or self.proc.poll() is not None:
                    for obj in self.lines[-20:]:
                        print(f"  cli {self.name}: {json.dumps(obj)[:400]}", file=sys.stderr)
                    raise AssertionError(f"cli {self.name}: timed out waiting for {what}")
                self.cond.wait(min(left, 0.5))

    def mark(self):
        with self.cond:
            return len(self.lines)

    def command(self, line, command_name, timeout=WAIT_S):
        """Runs a slash command and returns its reply (raises on an error reply)."""
        start = self.mark()
        self.send(line)
        obj = self.wait(f"the reply to {line!r}",
                        lambda o: o.get("kind") in ("reply", "error") and o.get("command") == command_name,
                        timeout, start)
        if obj["kind"] == "error":
            raise AssertionError(f"cli {self.name}: {line!r} failed: {obj}")
        return obj

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                self.send("/quit")
                self.proc.stdin.close()
            except (BrokenPipeError, ValueError, OSError):
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    log(f"ok: {what}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
