// HTTPS server on Node.js (OpenSSL linked statically into the node binary).
// usage: node node_server.js PORT CERT KEY
const https = require("https");
const fs = require("fs");
const [port, cert, key] = process.argv.slice(2);
https
  .createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, (req, res) => {
    res.writeHead(req.url === "/missing" ? 404 : 200, { "content-type": "text/plain" });
    res.end(`node says hi to ${req.url}\n`);
  })
  .listen(Number(port), "127.0.0.1");
