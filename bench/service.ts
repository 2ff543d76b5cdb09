import { spawn, type ChildProcess } from 'node:child_process'
import { openSync } from 'node:fs'
import { request } from 'undici'
import { freePort } from '../test/support/free-port.ts'

export interface RunningService {
  pid: number
  url: string
  /** Spawn to first `GET /health` 200, in ms. */
  startMs: number
  stop: () => Promise<void>
}

interface ServiceOptions {
  /** `node dist/server.js` (production build) or `npx tsx src/server.ts`. */
  command: string[]
  env: Record<string, string>
  logFile: string
  cwd: string
}

/** Starts the service as its own process and waits until it answers /health. */
export async function startService (options: ServiceOptions): Promise<RunningService> {
  const port = await freePort()
  const log = openSync(options.logFile, 'a')
  const started = performance.now()
  const [command, ...args] = options.command
  const child = spawn(command!, args, {
    cwd: options.cwd,
    env: { ...process.env, ...options.env, PORT: String(port), HOST: '127.0.0.1' },
    stdio: ['ignore', log, log],
  })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const url = `http://127.0.0.1:${port}`
  const startMs = await waitForHealth(url, child, options.logFile)
  return {
    pid: child.pid!,
    url,
    startMs: startMs - started,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM')
      await exited
    },
  }
}

async function waitForHealth (url: string, child: ChildProcess, logFile: string): Promise<number> {
  const deadline = Date.now() + 30_000
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`the service exited with code ${child.exitCode}; see ${logFile}`)
    try {
      const response = await request(`${url}/health`)
      await response.body.dump()
      if (response.statusCode === 200) return performance.now()
    } catch {}
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  child.kill('SIGKILL')
  throw new Error(`the service did not answer /health within 30 s; see ${logFile}`)
}
