"""Enrolls COUNT nodes of tests/ironic's noauth instance and adopts them to
`active`, in batches (benches/reconcile; up.sh started with IRONIC_ENROLL=0).

tests/ironic/helper.py's `enroll` moves every node at once, with a 10 s
timeout per request: with hundreds of nodes the conductor's verify and adopt
work starves the API (same process) and requests time out. Here at most
BATCH nodes are in a transition at a time, requests wait up to 120 s, and
node creation is skipped for nodes that exist (idempotent, resumable).

Usage: python enroll.py IRONIC_URL SUSHY_URL COUNT BATCH TIMEOUT
Prints the node UUIDs. Loopback only (the URLs come from up.sh's env file).
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'tests', 'ironic'))
import helper  # noqa: E402

_req = helper.req


def req(method, url, body=None, timeout=120):
    return _req(method, url, body, timeout=timeout)


helper.req = req


def main(ironic, sushy, count, batch, timeout):
    count, batch, timeout = int(count), int(batch), float(timeout)
    for url in (ironic, sushy):
        if not url.startswith('http://127.0.0.1:'):
            raise SystemExit('loopback URLs only: %s' % url)
    uuids = [helper.node_uuid('noauth', i) for i in range(count)]
    nodes = helper._list_nodes(ironic)
    t0 = time.time()
    for i, ident in enumerate(uuids):
        if ident in nodes:
            continue
        body = {
            'uuid': ident,
            'name': 'noauth-node-%d' % i,
            'driver': 'redfish',
            'boot_interface': 'redfish-virtual-media',
            'deploy_interface': 'direct',
            'bios_interface': 'no-bios',
            'firmware_interface': 'no-firmware',
            'driver_info': {
                'redfish_address': sushy,
                'redfish_system_id': '/redfish/v1/Systems/%s' % helper.system_uuid('noauth', i),
            },
        }
        code, node = req('POST', '%s/v1/nodes' % ironic, body)
        if code != 201:
            raise RuntimeError('create node %s: HTTP %s %s' % (ident, code, node))
    print('created %d nodes in %.0f s' % (count, time.time() - t0), file=sys.stderr)
    # Batch by batch, manage then adopt, so nodes become active as it goes
    # (a run can use the first ones while the rest enroll).
    t0 = time.time()
    for start in range(0, count, batch):
        part = uuids[start:start + batch]
        for state, target, good in (('enroll', 'manage', 'manageable'),
                                    ('manageable', 'adopt', 'active')):
            nodes = helper._list_nodes(ironic)
            todo = [u for u in part if nodes[u]['provision_state'] == state]
            if todo:
                helper._move(ironic, todo, target)
                helper._wait_states(ironic, todo, good, timeout)
        print('%d/%d nodes active after %.0f s' % (min(start + batch, count), count,
                                                   time.time() - t0), file=sys.stderr)
    nodes = helper._list_nodes(ironic)
    bad = [u for u in uuids if nodes[u]['provision_state'] != 'active']
    if bad:
        raise RuntimeError('%d nodes not active, e.g. %s' % (len(bad), bad[:3]))
    print(' '.join(uuids))


if __name__ == '__main__':
    main(*sys.argv[1:])
