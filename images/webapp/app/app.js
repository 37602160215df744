// The lab's webapp, written for muster's images: Express from Debian's packages, a small
// in-memory session per node (cookie NODESESSID), and the same answers as the lab's app.
'use strict';

const crypto = require('crypto');
const os = require('os');
const express = require('express');
const cookieParser = require('cookie-parser');
const morgan = require('morgan');

const PORT = Number(process.env.PORT || 3000);
const COOKIE = 'NODESESSID';
// Oldest sessions are forgotten beyond this many, so memory stays bounded.
const MAX_SESSIONS = 10000;

// The container's own address on its network (not loopback).
function ownAddress() {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list || []) {
      if (a.family === 'IPv4' && !a.internal) return a.address;
    }
  }
  return '127.0.0.1';
}

const ip = process.env.SERVER_IP || ownAddress();
const host = process.env.SERVER_NAME || os.hostname();
const tag = process.env.SERVER_TAG || process.env.TAG || '';

const sessions = new Map();

// Returns the client's session, creating one (and its cookie) when this node does not know it.
function session(req, res) {
  let id = req.cookies[COOKIE];
  let data = id && sessions.get(id);
  if (!data) {
    id = crypto.randomBytes(16).toString('hex');
    data = { views: 0 };
    sessions.set(id, data);
    if (sessions.size > MAX_SESSIONS) sessions.delete(sessions.keys().next().value);
    res.cookie(COOKIE, id, { httpOnly: true, path: '/' });
  }
  return { id, data };
}

// POST /delay makes every later GET / block this long (synchronously, as the lab's app did).
let delayMs = 0;
const sleeper = new Int32Array(new SharedArrayBuffer(4));

const app = express();
app.disable('x-powered-by');
app.use(morgan('short'));
app.use(express.json());
app.use(cookieParser());

app.get('/', (req, res) => {
  if (delayMs > 0) Atomics.wait(sleeper, 0, 0, delayMs);
  res.set('x-backend-ip', ip);
  if (req.method === 'HEAD') {
    // Health checks: no session, so they do not fill the store.
    res.status(200).end();
    return;
  }
  const { id, data } = session(req, res);
  data.views += 1;
  res.json({ hello: 'world!', ip, host, tag, sessionViews: data.views, id });
});

app.post('/delay', (req, res) => {
  const d = Number(req.body && req.body.delay);
  if (!Number.isFinite(d) || d < 0 || d > 60000) {
    res.status(400).json({ error: 'delay must be a number of milliseconds from 0 to 60000' });
    return;
  }
  delayMs = d;
  res.json({ delay: delayMs });
});

app.use((req, res) => res.status(404).json({ error: `no route for ${req.method} ${req.path}` }));

const server = app.listen(PORT, () => console.log(`Application started on port ${PORT}`));

function stop(signal) {
  console.log(`${signal} received, closing`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
