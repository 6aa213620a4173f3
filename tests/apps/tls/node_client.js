// HTTPS client on Node.js with keep-alive: each stdin line is a path to GET;
// prints the status code.
// usage: node node_client.js PORT
const https = require("https");
const readline = require("readline");
const port = Number(process.argv[2]);
const agent = new https.Agent({ keepAlive: true, maxSockets: 1, rejectUnauthorized: false });
const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (path) => {
  https
    .get({ host: "127.0.0.1", port, path: path.trim(), agent }, (res) => {
      res.resume();
      res.on("end", () => console.log(res.statusCode));
    })
    .on("error", (e) => console.log("error " + e.message));
});
rl.on("close", () => agent.destroy());
