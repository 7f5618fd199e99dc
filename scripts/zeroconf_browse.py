"""Browse for dropbox-shell peers with python-zeroconf (a third-party mDNS
implementation) and print each one found as a JSON line: its instance
name, port, addresses and TXT record. Used by scripts/lan_check.sh.

    python zeroconf_browse.py SECONDS [loopback]
"""
import json
import socket
import sys
import time

from zeroconf import IPVersion, ServiceBrowser, ServiceListener, Zeroconf

SERVICE = "_dropbox-shell._tcp.local."


class Printer(ServiceListener):
    def __init__(self):
        self.seen = set()

    def _show(self, zc, type_, name):
        info = zc.get_service_info(type_, name, timeout=3000)
        if info is None or name in self.seen:
            return
        self.seen.add(name)
        txt = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
        addrs = [socket.inet_ntoa(a) for a in info.addresses if len(a) == 4]
        print(json.dumps({"name": name, "port": info.port, "addresses": addrs, "txt": txt}), flush=True)

    def add_service(self, zc, type_, name):
        self._show(zc, type_, name)

    def update_service(self, zc, type_, name):
        self._show(zc, type_, name)

    def remove_service(self, zc, type_, name):
        pass


def main():
    seconds = float(sys.argv[1])
    interfaces = ["127.0.0.1"] if "loopback" in sys.argv[2:] else None
    zc = Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only) if interfaces else Zeroconf()
    ServiceBrowser(zc, SERVICE, Printer())
    time.sleep(seconds)
    zc.close()


if __name__ == "__main__":
    main()
