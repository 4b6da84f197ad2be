#!/usr/bin/env python3
"""Read a configuration ISO with pycdlib and print what it holds as JSON.

Usage: read_iso.py IMAGE

Output (one JSON object):
  pvd_label, joliet_label     volume identifiers, trailing spaces removed
  rock_ridge                  Rock Ridge version ("1.09"), or null
  has_joliet, has_el_torito   booleans
  iso9660  {identifier: base64 content}   primary tree, ISO 9660 names
  rr       {name: base64 content}         primary tree, Rock Ridge names
  joliet   {name: base64 content}         Joliet tree
  directories                 number of directories besides the root
pycdlib parses (and checks) every descriptor, path table and record on open.
"""
import base64
import io
import json
import sys

import pycdlib


def content(iso, **path):
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, **path)
    return base64.b64encode(out.getvalue()).decode()


def main():
    iso = pycdlib.PyCdlib()
    iso.open(sys.argv[1])
    result = {
        "pvd_label": iso.pvd.volume_identifier.decode("ascii").rstrip(" "),
        "joliet_label": None,
        "rock_ridge": iso.rock_ridge if iso.has_rock_ridge() else None,
        "has_joliet": iso.has_joliet(),
        "has_el_torito": iso.eltorito_boot_catalog is not None,
        "iso9660": {},
        "rr": {},
        "joliet": {},
        "directories": 0,
    }
    if iso.joliet_vd is not None:
        result["joliet_label"] = iso.joliet_vd.volume_identifier.decode("utf-16-be").rstrip(" ")
    for child in iso.list_children(iso_path="/"):
        if child.is_dot() or child.is_dotdot():
            continue
        if child.is_dir():
            result["directories"] += 1
            continue
        ident = child.file_identifier().decode("ascii")
        result["iso9660"][ident] = content(iso, iso_path="/" + ident)
        if child.rock_ridge is not None:
            name = child.rock_ridge.name().decode("utf-8")
            result["rr"][name] = content(iso, rr_path="/" + name)
    if iso.joliet_vd is not None:
        for child in iso.list_children(joliet_path="/"):
            if child.is_dot() or child.is_dotdot() or child.is_dir():
                continue
            name = child.file_identifier().decode("utf-16-be")
            result["joliet"][name] = content(iso, joliet_path="/" + name)
    iso.close()
    json.dump(result, sys.stdout, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
