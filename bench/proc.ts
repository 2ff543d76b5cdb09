import { readdirSync, readFileSync } from 'node:fs'

/**
 * CPU time from /proc, in milliseconds. `utime`/`stime` count the process's own threads;
 * `cutime`/`cstime` the children it has waited for (Postgres backends that exited are reaped by
 * the postmaster, so their time ends up there).
 */
interface ProcStat {
  pid: number
  ppid: number
  cpuMs: number
  childrenCpuMs: number
}

const TICKS_PER_SECOND = 100 // getconf CLK_TCK on Linux x86_64

function readProcStat (pid: number): ProcStat | undefined {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return undefined // exited
  }
  // The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
  const tick = (i: number) => Number(fields[i]) * 1000 / TICKS_PER_SECOND
  return { pid, ppid: Number(fields[1]), cpuMs: tick(11) + tick(12), childrenCpuMs: tick(13) + tick(14) }
}

export function processCpuMs (pid: number): number {
  return readProcStat(pid)?.cpuMs ?? 0
}

/** Peak resident set size (VmHWM) of a live process, in MB. */
export function peakRssMb (pid: number): number {
  try {
    const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return match ? Number(match[1]) / 1024 : 0
  } catch {
    return 0
  }
}

function numericDirs (): number[] {
  return readdirSync('/proc').filter((name) => /^\d+$/.test(name)).map(Number)
}

function commandLine (pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ')
  } catch {
    return ''
  }
}

/**
 * The whole Postgres server: every live child, then the postmaster with its reaped children. In
 * that order a child that exits between the two reads is counted twice (a few ms) rather than
 * lost entirely; callers wait for the backends they started to exit before the final reading.
 */
export function postgresServerCpuMs (postmasterPid: number): number {
  let total = 0
  for (const pid of numericDirs()) {
    const stat = pid === postmasterPid ? undefined : readProcStat(pid)
    if (stat?.ppid === postmasterPid) total += stat.cpuMs
  }
  const postmaster = readProcStat(postmasterPid)
  if (!postmaster) throw new Error(`no process ${postmasterPid}: is that the postmaster?`)
  return total + postmaster.cpuMs + postmaster.childrenCpuMs
}

/** Waits (up to `timeoutMs`) until no backend serves `database`, so their time is in the postmaster's. */
export async function backendsGone (postmasterPid: number, database: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline && backendPids(postmasterPid, database).length > 0) {
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

function backendPids (postmasterPid: number, database: string): number[] {
  const marker = ` ${database} `
  return numericDirs().filter((pid) => readProcStat(pid)?.ppid === postmasterPid && commandLine(pid).includes(marker))
}

/**
 * CPU of the backends serving one database, found by their process title
 * (`postgres: <user> <database> <client> <state>`). Polled, so a backend that exits between two
 * polls keeps the last value seen: other databases' load on a shared server does not count here.
 */
export class DatabaseBackendsCpu {
  private readonly lastSeen = new Map<number, number>()
  private readonly baseline = new Map<number, number>()
  private timer: NodeJS.Timeout | undefined

  constructor (private readonly postmasterPid: number, private readonly database: string) {}

  start (intervalMs = 50): void {
    for (const [pid, cpu] of this.sample()) this.baseline.set(pid, cpu)
    this.timer = setInterval(() => this.sample(), intervalMs)
  }

  /** CPU used since start() by this database's backends, in ms. */
  stop (): number {
    clearInterval(this.timer)
    this.sample()
    let total = 0
    for (const [pid, cpu] of this.lastSeen) total += cpu - (this.baseline.get(pid) ?? 0)
    return total
  }

  private sample (): Map<number, number> {
    const now = new Map<number, number>()
    for (const pid of backendPids(this.postmasterPid, this.database)) {
      const cpu = processCpuMs(pid)
      if (cpu === 0 && !this.lastSeen.has(pid)) continue // exited between the two reads
      now.set(pid, cpu)
      this.lastSeen.set(pid, Math.max(cpu, this.lastSeen.get(pid) ?? 0))
    }
    return now
  }
}
