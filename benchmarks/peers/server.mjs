// A plain automerge-repo 2.5.6 sync server for the kepu benchmarks:
//   node server.mjs <port> <storage dir>
// It accepts every peer and gives every peer access to every document it asks for or
// sends (no authentication, no validation). Like automerge-repo's own sync server it
// announces no document on its own: pushing every document to every new peer would cost
// documents × peers on each connect.
import { WebSocketServer } from "ws"
import { Repo } from "@automerge/automerge-repo"
import { WebSocketServerAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"

const [port, dir] = process.argv.slice(2)
if (!port || !dir || !/^\d+$/.test(port)) {
  console.error("usage: node server.mjs <port> <storage dir>")
  process.exit(2)
}
const wss = new WebSocketServer({ host: "127.0.0.1", port: Number(port) })
const repo = new Repo({
  network: [new WebSocketServerAdapter(wss)],
  storage: new NodeFSStorageAdapter(dir),
  peerId: `js-peer-${process.pid}`,
  shareConfig: {
    announce: async () => false,
    access: async () => true,
  },
})
wss.on("listening", () => console.log(`automerge-repo listening on 127.0.0.1:${port}`))
const stop = () => {
  wss.close()
  repo.shutdown().finally(() => process.exit(0))
}
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
