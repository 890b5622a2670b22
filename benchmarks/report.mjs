// Combines the kepu-loadgen figures of kepu-server and the peers it is compared with into
// one results file, prints the table with the kepu / peer ratios and draws the comparison
// plot as a standalone SVG.
//   node report.mjs <results.json> <plot.svg> kepu=<kepu.json> js=<js.json> [samod=<samod.json>]
// A peer whose figures file is missing or unreadable is shown as "-" (it did not finish).
// Machine details come from the environment (BENCH_MACHINE, BENCH_COMMAND, BENCH_DB).
import { readFileSync, writeFileSync } from "node:fs"

const [outFile, svgFile, ...named] = process.argv.slice(2)
const files = Object.fromEntries(named.map((a) => a.split(/=(.*)/s).slice(0, 2)))
if (!svgFile || !files.kepu || !files.js || Object.keys(files).some((k) => !["kepu", "js", "samod"].includes(k))) {
  console.error("usage: node report.mjs <results.json> <plot.svg> kepu=<kepu.json> js=<js.json> [samod=<samod.json>]")
  process.exit(2)
}
const read = (f, required) => {
  try {
    return JSON.parse(readFileSync(f, "utf8"))
  } catch (e) {
    console.error(`cannot read figures from ${f}: ${e.message}`)
    if (required) process.exit(1)
    return null
  }
}
const kepu = read(files.kepu, true)
const js = read(files.js, false)
const samod = files.samod ? read(files.samod, false) : undefined
// The peers beside kepu, in the table's and the plot's order.
const peers = [["js", js]]
if (samod !== undefined) peers.push(["samod", samod])
const get = (o, path) => path.split(".").reduce((v, k) => (v == null ? undefined : v[k]), o)

// Rows: [label, path, unit, "lower" | "higher" is better]
const rows = [
  ["end-of-day: time to converge", "scenarios.end-of-day.converge_s", "s", "lower"],
  ["end-of-day: check-ins/s", "scenarios.end-of-day.check_ins_per_s", "/s", "higher"],
  ["end-of-day: bytes sent by devices", "scenarios.end-of-day.bytes_sent", "B", "lower"],
  ["end-of-day: bytes received by devices", "scenarios.end-of-day.bytes_received", "B", "lower"],
]
const steps = get(kepu, "scenarios.live-day.steps") ?? []
steps.forEach((s, i) => {
  rows.push([`live-day ${s.rate_per_s}/s: observer p50`, `scenarios.live-day.steps.${i}.observer.p50_ms`, "ms", "lower"])
  rows.push([`live-day ${s.rate_per_s}/s: observer p99`, `scenarios.live-day.steps.${i}.observer.p99_ms`, "ms", "lower"])
})
rows.push(
  ["reconnect-storm: all back in sync", "scenarios.reconnect-storm.all_back_s", "s", "lower"],
  ["reconnect-storm: per device p50", "scenarios.reconnect-storm.per_device.p50_ms", "ms", "lower"],
  ["reconnect-storm: per device p99", "scenarios.reconnect-storm.per_device.p99_ms", "ms", "lower"],
  ["reconnect-storm: failures", "scenarios.reconnect-storm.failures", "", "lower"],
  ["server peak memory (VmHWM)", "server_memory.hwm_kb", "KiB", "lower"],
)

const fmt = (v) => (Number.isInteger(v) ? String(v) : fmtf(v))
const fmtf = (v) =>
  v == null ? "-" : Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2)
const ratios = Object.fromEntries(peers.map(([n]) => [n, {}]))
const lines = []
lines.push(
  `${"figure".padEnd(40)} ${"kepu".padStart(12)}` +
    peers.map(([n]) => ` ${n.padStart(12)}`).join("") +
    peers.map(([n]) => ` ${`kepu/${n}`.padStart(10)}`).join(""),
)
for (const [label, path, unit] of rows) {
  const a = get(kepu, path)
  const u = unit ? ` ${unit}` : ""
  let line = `${label.padEnd(40)} ${(fmt(a) + u).padStart(12)}`
  const rs = []
  for (const [n, figs] of peers) {
    const b = get(figs, path)
    const ratio = typeof a === "number" && typeof b === "number" && b !== 0 ? a / b : null
    ratios[n][label] = ratio
    line += ` ${(fmt(b) + (b == null ? "" : u)).padStart(12)}`
    rs.push(` ${(ratio == null ? "-" : ratio.toFixed(2)).padStart(10)}`)
  }
  lines.push(line + rs.join(""))
}
const sse = get(kepu, "scenarios.live-day.steps") ?? []
if (sse.some((s) => s.dashboard_sse && s.dashboard_sse.count > 0)) {
  lines.push("")
  lines.push("kepu only, venue dashboard (SSE) showing the arrival:")
  for (const s of sse) {
    lines.push(`  ${String(s.rate_per_s).padStart(4)}/s  p50 ${fmt(s.dashboard_sse?.p50_ms)} ms  p99 ${fmt(s.dashboard_sse?.p99_ms)} ms`)
  }
}
console.log(lines.join("\n"))

const results = {
  date: new Date().toISOString(),
  machine: process.env.BENCH_MACHINE ?? null,
  command: process.env.BENCH_COMMAND ?? null,
  kepu_database: process.env.BENCH_DB ?? "sqlite",
  kepu,
  js,
  ...(samod !== undefined ? { samod } : {}),
  ratios_kepu_over_js: ratios.js,
  ...(samod !== undefined ? { ratios_kepu_over_samod: ratios.samod } : {}),
}
writeFileSync(outFile, JSON.stringify(results, null, 2) + "\n")

// ---- the plot: three panels ----
const W = 1000
const H = 340
const colors = { kepu: "#1b6ca8", js: "#e07a1f", samod: "#3a9d5d" }
const esc = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;")
const parts = []
const text = (x, y, s, opts = "") => parts.push(`<text x="${x}" y="${y}" ${opts}>${esc(s)}</text>`)

function panel(x0, title, yLabel, groups, series, opts = {}) {
  // groups: labels on the x axis; series: {name: [values per group]}
  const pw = 280
  const ph = 220
  const top = 60
  const left = x0 + 50
  const all = Object.values(series).flat().filter((v) => typeof v === "number")
  const max = Math.max(1e-9, ...all) * 1.15
  text(x0 + 10 + pw / 2, 30, title, 'text-anchor="middle" font-weight="bold"')
  parts.push(`<line x1="${left}" y1="${top + ph}" x2="${left + pw}" y2="${top + ph}" stroke="#333"/>`)
  parts.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${top + ph}" stroke="#333"/>`)
  for (let t = 0; t <= 4; t++) {
    const v = (max * t) / 4
    const y = top + ph - (ph * t) / 4
    parts.push(`<line x1="${left - 4}" y1="${y}" x2="${left + pw}" y2="${y}" stroke="#ddd"/>`)
    text(left - 6, y + 4, fmt(v), 'text-anchor="end" font-size="10"')
  }
  text(x0 + 12, top - 10, yLabel, 'font-size="11"')
  const names = Object.keys(series)
  const gw = pw / groups.length
  groups.forEach((g, gi) => {
    text(left + gw * gi + gw / 2, top + ph + 16, g, 'text-anchor="middle" font-size="11"')
    if (opts.lines) return
    const bw = (gw * 0.7) / names.length
    names.forEach((n, ni) => {
      const v = series[n][gi]
      if (typeof v !== "number") return
      const h = (ph * v) / max
      const x = left + gw * gi + gw * 0.15 + bw * ni
      parts.push(`<rect x="${x.toFixed(1)}" y="${(top + ph - h).toFixed(1)}" width="${bw.toFixed(1)}" height="${h.toFixed(1)}" fill="${colors[n.split(" ")[0]]}" opacity="${n.includes("p99") ? 0.55 : 1}"/>`)
      text(x + bw / 2, top + ph - h - 3, fmt(v), 'text-anchor="middle" font-size="9"')
    })
  })
  if (opts.lines) {
    names.forEach((n) => {
      const pts = series[n]
        .map((v, gi) => (typeof v === "number" ? `${(left + gw * gi + gw / 2).toFixed(1)},${(top + ph - (ph * v) / max).toFixed(1)}` : null))
        .filter(Boolean)
      const dash = n.includes("p99") ? ' stroke-dasharray="5,3"' : ""
      parts.push(`<polyline points="${pts.join(" ")}" fill="none" stroke="${colors[n.split(" ")[0]]}" stroke-width="2"${dash}/>`)
      pts.forEach((p) => {
        const [cx, cy] = p.split(",")
        parts.push(`<circle cx="${cx}" cy="${cy}" r="3" fill="${colors[n.split(" ")[0]]}"/>`)
      })
    })
  }
}

const all = [["kepu", kepu], ...peers]
panel(10, "end-of-day", "check-ins/s (higher is better)", ["throughput"], Object.fromEntries(
  all.map(([n, figs]) => [n, [get(figs, "scenarios.end-of-day.check_ins_per_s")]]),
))
const rates = steps.map((s) => `${s.rate_per_s}/s`)
panel(330, "live-day latency to observer", "ms (lower is better)", rates, Object.fromEntries(
  all.flatMap(([n, figs]) => {
    const st = get(figs, "scenarios.live-day.steps") ?? []
    return [
      [`${n} p50`, st.map((s) => s.observer?.p50_ms)],
      [`${n} p99`, st.map((s) => s.observer?.p99_ms)],
    ]
  }),
), { lines: true })
panel(650, "reconnect-storm", "ms per device (lower is better)", ["p50", "p99"], Object.fromEntries(
  all.map(([n, figs]) => [n, [
    get(figs, "scenarios.reconnect-storm.per_device.p50_ms"),
    get(figs, "scenarios.reconnect-storm.per_device.p99_ms"),
  ]]),
))
// Legend.
const ly = H - 22
const legend = {
  kepu: "kepu-server",
  js: "automerge-repo 2.5.6 (JS)",
  samod: "samod 0.16 (Rust)",
}
all.forEach(([n], i) => {
  const x = 10 + i * 200
  parts.push(`<rect x="${x}" y="${ly - 10}" width="12" height="12" fill="${colors[n]}"/>`)
  text(x + 18, ly, legend[n])
})
text(660, ly, "dashed: p99, solid: p50", 'font-size="11"')
const scale = get(kepu, "scale") ?? {}
text(10, H - 4, `end-of-day ${scale.venues}×${scale.devices_per_venue} devices × ${scale.check_ins} check-ins; storm ${get(kepu, "scenarios.reconnect-storm.devices")} devices; ${process.env.BENCH_MACHINE ?? ""}`, 'font-size="10" fill="#555"')

const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
${parts.join("\n")}
</svg>
`
writeFileSync(svgFile, svg)
