import { readFileSync } from 'node:fs'

interface ProfileNode {
  id: number
  callFrame: { functionName: string, url: string, lineNumber: number }
}
interface CpuProfile { nodes: ProfileNode[], samples: number[], timeDeltas: number[] }

interface SelfTime { name: string, where: string, ms: number, share: number }

/** Top self-time functions of a V8 `.cpuprofile` (node --cpu-prof), idle time left out. */
export function topSelfTime (file: string, limit = 15): { busyMs: number, top: SelfTime[] } {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile
  const byNode = new Map(profile.nodes.map((node) => [node.id, node]))
  const totals = new Map<string, { name: string, where: string, us: number }>()
  let busyUs = 0
  profile.samples.forEach((id, i) => {
    const frame = byNode.get(id)?.callFrame
    const delta = profile.timeDeltas[i] ?? 0
    if (!frame || frame.functionName === '(idle)') return
    busyUs += delta
    const where = frame.url ? `${shorten(frame.url)}:${frame.lineNumber + 1}` : ''
    const key = `${frame.functionName}@${where}`
    const entry = totals.get(key) ?? { name: frame.functionName || '(anonymous)', where, us: 0 }
    entry.us += delta
    totals.set(key, entry)
  })
  const top = [...totals.values()].sort((a, b) => b.us - a.us).slice(0, limit)
    .map((entry) => ({ name: entry.name, where: entry.where, ms: entry.us / 1000, share: entry.us / busyUs }))
  return { busyMs: busyUs / 1000, top }
}

function shorten (url: string): string {
  const path = url.replace(/^file:\/\//, '')
  const modules = path.lastIndexOf('node_modules/')
  if (modules !== -1) return path.slice(modules + 'node_modules/'.length)
  const project = path.indexOf('/dist/')
  return project !== -1 ? path.slice(project + 1) : path
}
