import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { performance } from 'node:perf_hooks'

/** What a process wrote so far: each stream, and both in the order they came. */
interface Written { stdout: string, stderr: string, both: string }

function capture (child: ChildProcess): Written {
  const written = { stdout: '', stderr: '', both: '' }
  for (const stream of ['stdout', 'stderr'] as const) {
    child[stream]!.setEncoding('utf8').on('data', (chunk: string) => {
      written[stream] += chunk
      written.both += chunk
    })
  }
  return written
}

interface RunningProcess {
  child: ChildProcess
  out: Written
  /** Everything the process wrote so far (stdout and stderr), to search for what must not be logged. */
  output: () => string
  /** Resolves with the exit code (or the signal's name) when the process ends. */
  exited: Promise<number | string>
  /** Whether `pattern` shows in what it wrote within `timeoutMs` (false once it has exited without it). */
  waitFor: (stream: keyof Written, pattern: RegExp, timeoutMs?: number) => Promise<boolean>
}

/** Starts a long-running process (a server, a watcher, a migrator) and kills it when the test ends if it still runs. */
export function startProcess (
  t: { teardown: (fn: () => unknown) => void },
  command: string,
  args: string[],
  options: { env: NodeJS.ProcessEnv, cwd?: string }
): RunningProcess {
  const child = spawn(command, args, { env: options.env, cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = once(child, 'exit').then(([code, signal]) => (code ?? signal) as number | string)
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await exited
    }
  })
  const out = capture(child)
  const waitFor = async (stream: keyof Written, pattern: RegExp, timeoutMs = 10_000) => {
    const deadline = Date.now() + timeoutMs
    while (Date.now() < deadline) {
      if (pattern.test(out[stream])) return true
      if (child.exitCode !== null || child.signalCode !== null) return pattern.test(out[stream])
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
    return false
  }
  return { child, out, output: () => out.both, exited, waitFor }
}

/**
 * Spawns a server process (`src/server.ts` or a compiled `dist/server.js`), waits until it says
 * where it listens, and kills it when the test ends if it is still running.
 */
export async function spawnServer (
  t: { teardown: (fn: () => unknown) => void },
  command: string,
  args: string[],
  options: { env: NodeJS.ProcessEnv, cwd?: string, timeoutMs?: number }
): Promise<RunningProcess & { url: string }> {
  const server = startProcess(t, command, args, options)
  // Fastify's own start-up line; the port is the one the OS gave (PORT=0).
  const listening = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/
  if (!(await server.waitFor('both', listening, options.timeoutMs ?? 20_000))) {
    server.child.kill('SIGKILL')
    throw new Error(`the server did not start listening:\n${server.output()}`)
  }
  return { ...server, url: listening.exec(server.output())![1]! }
}

export interface ProcessRun {
  /** The exit code; null when a signal ended it (the timeout's included). */
  code: number | null
  stdout: string
  stderr: string
  ms: number
}

/**
 * Runs a command to its end as someone at a terminal would (a CLI, pgbench, python3): its exit
 * code, what it wrote and how long it took. `stdin` is written and closed; `started` gets the
 * child (to signal it while it runs); past `timeoutMs` it is killed.
 */
export function runProcess (command: string, args: string[], options: {
  env?: NodeJS.ProcessEnv
  cwd?: string
  stdin?: string | Buffer
  started?: (child: ChildProcess) => void
  timeoutMs?: number
} = {}): Promise<ProcessRun> {
  const begun = performance.now()
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? process.env, timeout: options.timeoutMs })
    options.started?.(child)
    const out = capture(child)
    child.on('error', (err) => reject(new Error(`cannot run ${command}: ${err.message}`)))
    child.on('close', (code) => resolve({ code, stdout: out.stdout, stderr: out.stderr, ms: performance.now() - begun }))
    // A command may exit without reading its input (--help, an early error): that is its answer, not a failure.
    child.stdin.on('error', (err: NodeJS.ErrnoException) => { if (err.code !== 'EPIPE') reject(err) })
    child.stdin.end(options.stdin ?? '')
  })
}
