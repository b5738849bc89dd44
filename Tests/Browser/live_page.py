#!/usr/bin/env python3
"""The live page in a real browser: Debian's headless Chromium, driven by Selenium.

Run by PopgateCLITests/LivePageTests, which starts Dovecot and the gateway (or `popgate inspect --http`) and
passes their addresses; each scenario asserts what the page shows, from its DOM, and exits non-zero on the first
thing that is not as it should be. The POP3 clients here are Python's poplib and raw sockets.
"""
import argparse
import poplib
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def fail(message):
    print("FAIL: " + message, flush=True)
    sys.exit(1)


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,900", "--no-first-run", "--disable-extensions",
                     "--disable-background-networking", "--disable-component-update"]:
        options.add_argument(argument)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def wait(what, check, seconds=20):
    deadline = time.time() + seconds
    last = None
    while time.time() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as error:  # the DOM changes under us; try again
            last = error
        time.sleep(0.1)
    fail("timed out waiting for " + what + " (last: " + repr(last) + ")")


def js(driver, script, *args):
    return driver.execute_script(script, *args)


def rows(driver):
    return js(driver, """return Array.from(document.querySelectorAll('#sessions tr')).map(tr => ({
        id: tr.dataset.id, open: tr.classList.contains('open'), state: tr.dataset.state,
        anomalies: Number(tr.dataset.anomalies), text: tr.textContent }));""")


def transcript(driver):
    return js(driver, """return Array.from(document.querySelectorAll('#transcript li')).map(li => ({
        kind: li.dataset.kind, rule: li.dataset.rule || null, cls: li.className, text: li.textContent,
        visible: li.offsetParent !== null }));""")


def page_url(base, token=None):
    return base + ("?token=" + urllib.parse.quote(token) if token else "")


def same_origin_only(driver, base):
    origin = urllib.parse.urlsplit(base)
    prefix = origin.scheme + "://" + origin.netloc + "/"
    resources = js(driver, "return performance.getEntriesByType('resource').map(e => e.name)")
    resources.append(js(driver, "return location.href"))
    outside = [url for url in resources if not url.startswith(prefix)]
    if outside:
        fail("the page asked for something outside the gateway: " + repr(outside))
    references = js(driver, """return Array.from(document.querySelectorAll('[src],[href]'))
        .map(e => e.src || e.href)""")
    outside = [url for url in references if url and not url.startswith(prefix)]
    if outside:
        fail("the page refers to something outside the gateway: " + repr(outside))
    return len(resources)


def gateway(args):
    """A session appears, moves to TRANSACTION, shows an anomaly, masks the password, shows markup as text."""
    host, port = args.pop.rsplit(":", 1)
    driver = browser()
    try:
        driver.get(page_url(args.page, args.token))
        wait("the page to connect", lambda: js(driver, "return document.getElementById('status').textContent") == "live")
        before = {row["id"] for row in rows(driver)}
        client = poplib.POP3(host, int(port), timeout=10)
        try:
            client._shortcmd("STAT")  # before logging in: the server refuses, the gateway names the rule
            fail("STAT before login was accepted")
        except poplib.error_proto:
            pass
        new = wait("the session to appear", lambda: [r for r in rows(driver) if r["id"] not in before and r["open"]])
        session = new[0]["id"]
        driver.find_element(By.CSS_SELECTOR, '#sessions tr[data-id="%s"]' % session).click()
        wait("the transcript to load", lambda: len(transcript(driver)) > 2)
        client.user(args.user)
        client.pass_(args.password)
        wait("the diagram to light TRANSACTION",
             lambda: js(driver, "return document.getElementById('diagram').dataset.state") == "transaction"
             and js(driver, "return document.querySelector('#state-transaction.current') !== null"))
        wait("the row to say TRANSACTION",
             lambda: [r for r in rows(driver) if r["id"] == session and r["state"] == "transaction"])
        anomalies = wait("an anomaly with its rule", lambda: [li for li in transcript(driver) if li["kind"] == "anomaly"])
        if not all(li["rule"] and li["rule"].startswith("R") for li in anomalies):
            fail("an anomaly without its rule id: " + repr(anomalies))
        hostile = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script><b>bold</b>'
        try:
            client._shortcmd("NOOP " + hostile)
        except poplib.error_proto:
            pass
        shown = wait("the hostile line, as text", lambda: [li for li in transcript(driver)
                                                           if li["kind"] == "command" and hostile in li["text"]])
        if js(driver, "return window.pwned") is not None:
            fail("a line from the client ran as script")
        if js(driver, "return document.querySelectorAll('#transcript img, #transcript script, #transcript b').length") != 0:
            fail("a line from the client became markup")
        # Anomalies only: every other line hidden, the anomalies still there.
        driver.find_element(By.ID, "anomalies-only").click()
        shown_now = [li for li in transcript(driver) if li["visible"]]
        if not shown_now or any(li["kind"] != "anomaly" for li in shown_now):
            fail("'anomalies only' shows more than the anomalies: " + repr([li["kind"] for li in shown_now]))
        driver.find_element(By.ID, "anomalies-only").click()
        # Paused, the page holds what comes; resumed, it shows it.
        driver.find_element(By.ID, "pause").click()
        count = len(transcript(driver))
        client.noop()
        time.sleep(0.5)
        if len(transcript(driver)) != count:
            fail("the paused page went on showing lines")
        driver.find_element(By.ID, "pause").click()
        wait("the held lines after resume", lambda: len(transcript(driver)) >= count + 2)
        client.stat()
        client.quit()
        wait("the session to end as the client quit",
             lambda: [r for r in rows(driver) if r["id"] == session and not r["open"] and "the client quit" in r["text"]])
        source = driver.page_source
        text = js(driver, "return document.body.innerText")
        if args.password in source or args.password in text:
            fail("the password is on the page")
        passes = [li for li in transcript(driver) if li["kind"] == "command" and li["text"].startswith("PASS")]
        if not passes or "*" not in passes[0]["text"]:
            fail("the PASS line is not shown masked: " + repr(passes))
        # curl through the gateway: its session appears and ends as the client quit.
        known = {row["id"] for row in rows(driver)}
        listing = subprocess.run(["curl", "-sS", "--max-time", "10", "-u", "%s:%s" % (args.user, args.password),
                                  "pop3://%s:%s/" % (host, port)], capture_output=True, text=True)
        if listing.returncode != 0:
            fail("curl through the gateway failed: " + listing.stderr)
        wait("curl's session", lambda: [r for r in rows(driver) if r["id"] not in known and not r["open"]
                                        and args.user in r["text"] and "the client quit" in r["text"]])
        requests = same_origin_only(driver, args.page)
        if args.screenshot:
            driver.save_screenshot(args.screenshot)
        print("OK session=%s anomalies=%d hostile-shown=%d requests=%d" % (session, len(anomalies), len(shown), requests))
    finally:
        driver.quit()


def token(args):
    """Without the token the page is refused; with it, the page works."""
    driver = browser()
    try:
        driver.get(args.page)
        body = driver.find_element(By.TAG_NAME, "body").text
        if "bearer token is needed" not in body:
            fail("the page opened without its token: " + body[:200])
        driver.get(page_url(args.page, args.token))
        wait("the page to connect with the token",
             lambda: js(driver, "return document.getElementById('status').textContent") == "live")
        print("OK refused without the token, live with it")
    finally:
        driver.quit()


def stalled(args):
    """A page that stops reading loses events and says how many; the session it watched is not held back."""
    host, port = args.pop.rsplit(":", 1)
    driver = browser()
    try:
        driver.get(page_url(args.page, args.token))
        wait("the page to connect", lambda: js(driver, "return document.getElementById('status').textContent") == "live")
        before = {row["id"] for row in rows(driver)}
        raw = socket.create_connection((host, int(port)), timeout=30)
        reader = raw.makefile("rb")
        reader.readline()
        raw.sendall(("USER %s\r\nPASS %s\r\n" % (args.user, args.password)).encode())
        reader.readline()
        reader.readline()
        new = wait("the session to appear", lambda: [r for r in rows(driver) if r["id"] not in before and r["open"]])
        driver.find_element(By.CSS_SELECTOR, '#sessions tr[data-id="%s"]' % new[0]["id"]).click()
        wait("the transcript to load", lambda: len(transcript(driver)) > 2)
        # The page's own thread is kept busy: it stops taking what the stream brings, the stream backs up.
        busy = threading.Thread(target=lambda: js(driver, "const t = Date.now(); while (Date.now() - t < %d) {}"
                                                  % int(args.stall * 1000)))
        busy.start()
        time.sleep(0.5)
        started = time.time()
        count = args.commands
        raw.sendall(b"NOOP\r\n" * count)
        for _ in range(count):
            if not reader.readline().startswith(b"+OK"):
                fail("a NOOP was not answered +OK")
        took = time.time() - started
        raw.sendall(b"QUIT\r\n")
        reader.readline()
        raw.close()
        busy.join()
        missed = wait("the page to say it missed events",
                      lambda: int(js(driver, "return document.getElementById('missed').dataset.missed || '0'")), 60)
        shown = js(driver, "return document.getElementById('missed').textContent")
        if args.stall and took > args.stall:
            fail("the session took %.1f s for %d NOOPs: the stalled page held it back" % (took, count))
        print("OK missed=%d shown=%r noops=%d in %.2fs" % (missed, shown, count, took))
    finally:
        driver.quit()


def capture(args):
    """`popgate inspect --http`: the capture's sessions, and stepping through one line by line."""
    driver = browser()
    try:
        driver.get(page_url(args.page, args.token))
        found = wait("the capture's sessions", lambda: rows(driver) if len(rows(driver)) >= args.sessions else None)
        if len(found) != args.sessions:
            fail("expected %d sessions, the page shows %d" % (args.sessions, len(found)))
        if js(driver, "return document.getElementById('mode').textContent") != "capture":
            fail("the page does not say it shows a capture")
        driver.find_element(By.CSS_SELECTOR, "#sessions tr").click()
        wait("the transcript", lambda: len(transcript(driver)) > 3)
        if sum(1 for li in transcript(driver) if li["visible"]) != 1:
            fail("stepping starts at the first line: " + repr([li["text"] for li in transcript(driver) if li["visible"]]))
        driver.find_element(By.ID, "step").click()
        driver.find_element(By.ID, "step").click()
        visible = [li for li in transcript(driver) if li["visible"]]
        if len(visible) != 3:
            fail("after two steps three lines show, not %d" % len(visible))
        at = driver.find_element(By.ID, "step-at").text
        if not at.startswith("line 3 of "):
            fail("the step counter says " + repr(at))
        driver.find_element(By.ID, "step-all").click()
        if not all(li["visible"] for li in transcript(driver)):
            fail("'all' does not show every line")
        same_origin_only(driver, args.page)
        print("OK sessions=%d lines=%d %s" % (len(found), len(transcript(driver)), at))
    finally:
        driver.quit()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario", choices=["gateway", "token", "stalled", "capture"])
    parser.add_argument("--page", required=True, help="the page's address, http://HOST:PORT/")
    parser.add_argument("--pop", help="the gateway's POP3 address, HOST:PORT")
    parser.add_argument("--user", default="alice")
    parser.add_argument("--password", default="wonderland")
    parser.add_argument("--token")
    parser.add_argument("--screenshot")
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--commands", type=int, default=30000)
    parser.add_argument("--stall", type=float, default=8.0)
    args = parser.parse_args()
    {"gateway": gateway, "token": token, "stalled": stalled, "capture": capture}[args.scenario](args)


if __name__ == "__main__":
    main()
