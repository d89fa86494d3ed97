// An Express app on Debian's nodejs that says goodbye on SIGTERM, as users write them.
'use strict';
const express = require('express');
const net = require('net');
const v8 = require('v8');

const app = express();
app.get('/', (req, res) => res.send('express ok\n'));
app.get('/heap', (req, res) => res.send(`${v8.getHeapStatistics().heap_size_limit}\n`));
app.get('/redis', (req, res) => {
  const s = net.connect({ host: req.query.host, port: Number(req.query.port || 6379) });
  s.setTimeout(3000, () => s.destroy(new Error('timeout')));
  s.once('connect', () => s.write('PING\r\n'));
  s.once('data', (d) => { res.send(d.toString()); s.end(); });
  s.once('error', (e) => res.status(502).send(`error: ${e.message}\n`));
});
const server = app.listen(Number(process.env.PORT), () => console.log('express: listening'));
process.on('SIGTERM', () => {
  console.log('express: SIGTERM, closing');
  server.close(() => process.exit(0));
});
