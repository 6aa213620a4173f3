// HTTPS server on Node.js (OpenSSL linked statically into the node binary).
// usage: node node_server.js PORT CERT KEY
const https = require("https");
const fs = require("fs");
const [port, cert, key] = process.argv.slice(2);
const server = https
  .createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, (req, res) => {
    // After /short the server closes idle connections at once: the client
    // reads the end of its connection before it opens the next one.
    if (req.url === "/short") server.keepAliveTimeout = 100;
    res.writeHead(req.url === "/missing" ? 404 : 200, { "content-type": "text/plain" });
    res.end(`node says hi to ${req.url}\n`);
  })
  .listen(Number(port), "127.0.0.1");
// Node closes idle keep-alive connections after 5 s; the test's connection
// must outlive the agent's start (slow in a debug build).
server.keepAliveTimeout = 600000;
