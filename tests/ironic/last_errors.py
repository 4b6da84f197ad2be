"""Collects the real `last_error` texts Ironic writes for failed virtual
media operations, for tests/fixtures/ironic/last_error/<release>/.

Usage (against an environment started by tests/ironic/up.sh):

    python3 tests/ironic/last_errors.py IRONIC_URL NODE OUTDIR SUSHY_EMULATOR

NODE must be an `active` node nobody else uses meanwhile. For a BMC that
refuses media the script starts its own sushy-emulator (SUSHY_EMULATOR:
the venv's bin/sushy-emulator) and enrolls a throw-away node on it, which
also serves Ironic's own virtual-media boot failures (ramdisk deploys);
both are removed at the end.
Node UUIDs in the texts are replaced by NODE_UUID, Redfish system IDs by
SYSTEM_UUID, ports (but :1) by PORT. Each file gets a `.note` beside it saying how it was produced.
Everything runs on 127.0.0.1. Stdlib only.
"""
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

HOST = '127.0.0.1'
VERSION = '1.93'


def req(method, url, body=None):
    headers = {'X-OpenStack-Ironic-API-Version': VERSION}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers['Content-Type'] = 'application/json'
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw.strip() else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors='replace')


class Images(http.server.BaseHTTPRequestHandler):
    """/ok.iso: 200, anything else 404."""

    def _answer(self, head):
        code = 200 if self.path == '/ok.iso' else 404
        body = b'x' * 2048 if code == 200 else b'nope\n'
        self.send_response(code)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_HEAD(self):
        self._answer(True)

    def do_GET(self):
        self._answer(False)

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_free(ironic, node, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        code, doc = req('GET', '%s/v1/nodes/%s' % (ironic, node))
        assert code == 200, (code, doc)
        if not doc.get('reservation') and (
                not doc.get('target_provision_state')
                or doc['provision_state'].endswith('failed')):
            return doc
        time.sleep(0.3)
    raise RuntimeError('node %s still busy' % node)


def wait_state(ironic, node, states, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        doc = wait_free(ironic, node, timeout)
        if doc['provision_state'] in states:
            return doc
        time.sleep(0.3)
    raise RuntimeError('node %s never reached %s' % (node, states))


def move(ironic, node, target, states):
    code, doc = req('PUT', '%s/v1/nodes/%s/states/provision' % (ironic, node),
                    {'target': target})
    assert code == 202, (target, code, doc)
    return wait_state(ironic, node, states)


def main(ironic, node, outdir, sushy_bin):
    server = http.server.ThreadingHTTPServer((HOST, 0), Images)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    images = 'http://%s:%d' % (HOST, port)
    os.makedirs(outdir, exist_ok=True)
    _, root = req('GET', ironic + '/')
    release = root['default_version']['version']

    def save(name, text, note):
        for ident in uuids:
            text = text.replace(ident, 'NODE_UUID')
        text = re.sub(r'127\.0\.0\.1:[0-9]{2,}/', '127.0.0.1:PORT/', text)
        text = re.sub(r'/Systems/[0-9a-f-]{36}/', '/Systems/SYSTEM_UUID/', text)
        text = re.sub(r' at 0x[0-9a-f]+>', ' at 0xADDRESS>', text)
        with open(os.path.join(outdir, name + '.txt'), 'w') as f:
            f.write(text + '\n')
        with open(os.path.join(outdir, name + '.note'), 'w') as f:
            f.write('%s (max API %s)\n' % (note, release))
        print('%s: %s' % (name, text))

    def last_error(ident, doc):
        if doc.get('last_error'):
            return doc['last_error'], ''
        # Some releases clear last_error once the node settles: the same
        # text stays in the node's history.
        _, hist = req('GET', '%s/v1/nodes/%s/history' % (ironic, ident))
        errors = [h for h in hist.get('history', []) if h.get('severity') == 'ERROR']
        return (errors[-1]['event'] if errors else ''), ' (from the node history: last_error was empty)'

    uuids = [node]

    def attach(body, name, note, node=node):
        wait_free(ironic, node)
        req('DELETE', '%s/v1/nodes/%s/vmedia' % (ironic, node))
        wait_free(ironic, node)
        code, doc = req('POST', '%s/v1/nodes/%s/vmedia' % (ironic, node), body)
        assert code == 204, (code, doc)
        doc = wait_free(ironic, node)
        text, where = doc.get('last_error') or '', ''
        save(name, text, note + where)

    vmedia = '%s/v1/nodes/%s/vmedia' % (ironic, node)
    attach({'device_type': 'cdrom', 'image_url': images + '/missing.iso'},
           'attach-image-404',
           'POST %s {"device_type": "cdrom", "image_url": "<server>/missing.iso"}: '
           'the image server answers 404' % vmedia.replace(node, 'NODE_UUID'))
    attach({'device_type': 'cdrom', 'image_url': 'http://%s:1/unreachable.iso' % HOST},
           'attach-image-unreachable',
           'POST vmedia {"device_type": "cdrom", "image_url": "http://127.0.0.1:1/unreachable.iso"}: '
           'nothing listens there')

    # A locked node gets no last_error: the API refuses the call at once
    # (409, see the Rust tests).

    # A BMC that refuses media: a second sushy-emulator that accepts only
    # IPv6 image URLs (SUSHY_EMULATOR_VIRTUAL_MEDIA_IP_FAMILY = '6'; Ironic
    # publishes on 127.0.0.1), and a throw-away node on it.
    tmp = tempfile.mkdtemp()
    sushy_port = free_port()
    system = str(uuid.uuid4())
    with open(os.path.join(tmp, 'sushy.conf'), 'w') as f:
        f.write('SUSHY_EMULATOR_LISTEN_IP = %r\n' % HOST)
        f.write('SUSHY_EMULATOR_LISTEN_PORT = %d\n' % sushy_port)
        f.write('SUSHY_EMULATOR_FAKE_DRIVER = True\n')
        f.write('SUSHY_EMULATOR_STATE_DIR = %r\n' % tmp)
        f.write("SUSHY_EMULATOR_VIRTUAL_MEDIA_IP_FAMILY = '6'\n")
        f.write('SUSHY_EMULATOR_FAKE_SYSTEMS = %r\n' % [{
            'uuid': system, 'name': 'refusing', 'power_state': 'On',
            'external_notifier': False, 'nics': [{'mac': '52:54:00:ff:00:01', 'ip': HOST}]}])
    log = open(os.path.join(tmp, 'sushy.log'), 'w')
    sushy = subprocess.Popen([sushy_bin, '--config', os.path.join(tmp, 'sushy.conf')],
                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen('http://%s:%d/redfish/v1/Systems' % (HOST, sushy_port), timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        code, doc = req('POST', '%s/v1/nodes' % ironic, {
            'name': 'refusing-bmc-%s' % system[:8], 'driver': 'redfish',
            'boot_interface': 'redfish-virtual-media', 'deploy_interface': 'ramdisk',
            'bios_interface': 'no-bios', 'firmware_interface': 'no-firmware',
            'driver_info': {'redfish_address': 'http://%s:%d' % (HOST, sushy_port),
                            'redfish_system_id': '/redfish/v1/Systems/%s' % system}})
        assert code == 201, (code, doc)
        temp = doc['uuid']
        uuids.append(temp)
        move(ironic, temp, 'manage', ('manageable',))
        attach({'device_type': 'cdrom', 'image_url': images + '/ok.iso'},
               'attach-bmc-refuses',
               'POST vmedia {"device_type": "cdrom", "image_url": "<server>/ok.iso"} on a '
               'node whose BMC (sushy-tools with SUSHY_EMULATOR_VIRTUAL_MEDIA_IP_FAMILY=6) '
               'refuses the IPv4 URL of Ironic\'s republished copy', temp)
        move(ironic, temp, 'provide', ('available',))
        for name, iso, note in [
            ('boot-iso-404', '/missing.iso',
             'ramdisk deploy (deploy_interface=ramdisk, boot_interface=redfish-virtual-media) '
             'with instance_info.boot_iso=<server>/missing.iso (404)'),
            ('boot-bmc-refuses', '/ok.iso',
             'ramdisk deploy with instance_info.boot_iso=<server>/ok.iso on the refusing BMC: '
             'Ironic\'s own virtual-media boot fails at InsertMedia'),
        ]:
            code, doc = req('PATCH', '%s/v1/nodes/%s' % (ironic, temp), [
                {'op': 'add', 'path': '/instance_info/boot_iso', 'value': images + iso}])
            assert code == 200, (code, doc)
            doc = move(ironic, temp, 'active', ('deploy failed', 'active'))
            text, where = last_error(temp, doc)
            save(name, text, note + where)
            move(ironic, temp, 'deleted', ('available',))
        req('DELETE', '%s/v1/nodes/%s' % (ironic, temp))
    finally:
        sushy.terminate()
        sushy.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    req('DELETE', vmedia)
    wait_free(ironic, node)
    server.shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main(*sys.argv[1:]))
