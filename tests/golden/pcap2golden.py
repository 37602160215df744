#!/usr/bin/env python3
"""Turns a loopback pcap (tcpdump -i lo -w) into a golden-vector text file: one line per UDP
payload and one per TCP stream direction, `udp|tcp SRCPORT>DSTPORT HEX`. Lines starting with
`#` are comments. Usage: pcap2golden.py CAPTURE.pcap "description" > FILE.txt"""
import struct
import sys

def packets(path):
    data = open(path, "rb").read()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        frame = data[off + 16: off + 16 + incl]
        off += 16 + incl
        if linktype == 1:
            frame = frame[14:]          # Ethernet header
        elif linktype == 113:
            frame = frame[16:]          # Linux cooked capture
        if not frame or frame[0] >> 4 != 4:
            continue
        ihl = (frame[0] & 15) * 4
        proto = frame[9]
        body = frame[ihl:]
        sport, dport = struct.unpack(">HH", body[:4])
        if proto == 17:
            yield "udp", sport, dport, body[8:]
        elif proto == 6:
            doff = (body[12] >> 4) * 4
            yield "tcp", sport, dport, body[doff:]

def main():
    path, what = sys.argv[1], sys.argv[2]
    print(f"# {what}")
    print("# udp SRC>DST HEX: one datagram; tcp SRC>DST HEX: one stream direction, concatenated")
    streams, order = {}, []
    for proto, s, d, payload in packets(path):
        if proto == "udp":
            print(f"udp {s}>{d} {payload.hex()}")
        elif payload:
            key = (s, d)
            if key not in streams:
                streams[key] = b""
                order.append(key)
            streams[key] += payload
    for s, d in order:
        print(f"tcp {s}>{d} {streams[(s, d)].hex()}")

main()
