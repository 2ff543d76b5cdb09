import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { performance } from 'node:perf_hooks'

interface ServerProcess {
  child: ChildProcess
  /** `http://127.0.0.1:<port>` once the server listens. */
  url: string
  /** Everything the process wrote so far (stdout and stderr), to search for what must not be logged. */
  output: () => string
  /** Resolves with the exit code (or the signal's name) when the process ends. */
  exited: Promise<number | string>
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
): Promise<ServerProcess> {
  const child = spawn(command, args, { env: options.env, cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = once(child, 'exit').then(([code, signal]) => (code ?? signal) as number | string)
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await exited
    }
  })
  let text = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => { text += chunk })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { text += chunk })

  const deadline = Date.now() + (options.timeoutMs ?? 20_000)
  while (Date.now() < deadline) {
    // Fastify's own start-up line; the port is the one the OS gave (PORT=0).
    const match = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(text)
    if (match) return { child, url: match[1]!, output: () => text, exited }
    if (child.exitCode !== null) break
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  child.kill('SIGKILL')
  throw new Error(`the server did not start listening:\n${text}`)
}

export interface ProcessRun {
  /** The exit code; null when a signal ended it. */
  code: number | null
  stdout: string
  stderr: string
  ms: number
}

/**
 * Runs a command to its end as someone at a terminal would (a CLI, pgbench, python3): its exit
 * code, what it wrote and how long it took. `stdin` is written and closed; `started` gets the
 * child (to signal it while it runs).
 */
export function runProcess (command: string, args: string[], options: { env?: NodeJS.ProcessEnv, cwd?: string, stdin?: string | Buffer, started?: (child: ChildProcess) => void } = {}): Promise<ProcessRun> {
  const begun = performance.now()
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? process.env })
    options.started?.(child)
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk })
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
    child.on('error', (err) => reject(new Error(`cannot run ${command}: ${err.message}`)))
    child.on('close', (code) => resolve({ code, stdout, stderr, ms: performance.now() - begun }))
    child.stdin.end(options.stdin ?? '')
  })
}
