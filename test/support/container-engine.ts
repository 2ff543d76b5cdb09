import { randomUUID } from 'node:crypto'
import { join } from 'node:path'
import type { Test } from 'tap'
import { ROOT } from './compiled.ts'
import { runProcess, type ProcessRun } from './process.ts'

export { freePort } from './free-port.ts'

/** What `npm run image:build` makes (scripts/image-build.sh). */
export const IMAGE = 'book-completion-webhook:latest'

export interface ContainerEngine {
  name: 'podman' | 'docker'
  /** The engine's CLI to its end (`podman …`), its own systemd-less health-timer noise dropped. */
  run: (args: string[], options?: { timeoutMs?: number, env?: NodeJS.ProcessEnv }) => Promise<ProcessRun>
}

// podman without systemd logs this on every run of an image with a HEALTHCHECK, and goes on.
const SYSTEMD_NOISE = /^time="[^"]*" level=error msg="[^\n]*unable to get systemd connection[^\n]*\n?/gm

/** An environment for child processes without tap's NODE_OPTIONS (its loader has no place in them). */
export function plainEnv (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra }
  delete env.NODE_OPTIONS
  return env
}

function engineNamed (name: 'podman' | 'docker'): ContainerEngine {
  return {
    name,
    run: async (args, options = {}) => {
      const done = await runProcess(name, args, { env: plainEnv(options.env), timeoutMs: options.timeoutMs ?? 120_000 })
      return { ...done, stderr: done.stderr.replace(SYSTEMD_NOISE, '') }
    },
  }
}

let found: Promise<ContainerEngine | string> | undefined

/** podman when it runs here, else docker when its daemon answers; else why not (a skip reason). */
export function containerEngine (): Promise<ContainerEngine | string> {
  found ??= (async () => {
    const probes: Array<['podman' | 'docker', string[]]> = [['podman', ['version']], ['docker', ['version', '--format', '{{.Server.Version}}']]]
    for (const [name, args] of probes) {
      const answer = await runProcess(name, args, { env: plainEnv(), timeoutMs: 20_000 }).catch(() => undefined)
      if (answer?.code === 0) return engineNamed(name)
    }
    return 'no container engine (podman, or docker with a daemon) is installed here: .ci/install-engine.sh installs podman'
  })()
  return found
}

/** The engine, or undefined after registering a skipped test saying why (as requiresPostgres does). */
export async function requiresEngine (t: Test, what: string): Promise<ContainerEngine | undefined> {
  const engine = await containerEngine()
  if (typeof engine !== 'string') return engine
  t.test(what, { skip: engine }, () => {})
  return undefined
}

export interface ImageBuild { tag: string, ms: number, output: string }
let built: Promise<ImageBuild> | undefined

/** `npm run image:build` once per test file (process); later calls get the same build. Throws with its output when it fails. */
export function buildImage (): Promise<ImageBuild> {
  built ??= (async () => {
    const run = await runProcess('npm', ['run', '--silent', 'image:build', '--', '--quiet'], { cwd: ROOT, env: plainEnv(), timeoutMs: 900_000 })
    if (run.code !== 0) throw new Error(`npm run image:build failed (exit ${run.code}):\n${run.stderr.slice(-3000)}`)
    return { tag: IMAGE, ms: run.ms, output: run.stderr }
  })()
  return built
}

/** The progress lines of image:build and standins.sh that carry a time or say nothing was rebuilt ("… built in 5 s (311 MB)"). */
export function timedSteps (output: string): string[] {
  return output.split('\n').filter((line) => /\(\d+ s\)|built in \d+ s|up to date|: present|: pulled/.test(line))
}

/** A container's published ports: `{ "3001/tcp": [{ HostIp, HostPort }] }`. */
export async function publishedPorts (engine: ContainerEngine, container: string): Promise<Record<string, Array<{ HostIp: string, HostPort: string }>>> {
  return JSON.parse((await engine.run(['inspect', '--format', '{{json .NetworkSettings.Ports}}', container])).stdout)
}

/** The official-named bases other than the Dockerfile's (postgres:15-bookworm for compose): present, pulled or stand-in. */
export async function ensureBaseImages (engine: ContainerEngine, images: string[]): Promise<ProcessRun> {
  const run = await runProcess(join(ROOT, '.ci/images/standins.sh'), [engine.name, ...images], { env: plainEnv(), timeoutMs: 900_000 })
  if (run.code !== 0) throw new Error(`.ci/images/standins.sh failed (exit ${run.code}):\n${run.stderr.slice(-3000)}`)
  return run
}

export interface Container {
  name: string
  /** `engine exec [--user U] NAME …command` to its end. */
  exec: (command: string[], options?: { user?: string, env?: Record<string, string>, timeoutMs?: number }) => Promise<ProcessRun>
  /** Everything the container wrote so far (stdout and stderr). */
  logs: () => Promise<string>
  /** `engine inspect --format FORMAT NAME`, trimmed. */
  inspect: (format: string) => Promise<string>
  /** Runs the image's health check once (podman healthcheck run; docker: the status it keeps): true when healthy. */
  healthy: () => Promise<boolean>
  /** Polls `healthy` until true (the ms it took) or the timeout (undefined). */
  waitHealthy: (timeoutMs?: number) => Promise<number | undefined>
  /** `engine stop -t SECONDS NAME` (SIGTERM, then SIGKILL past the seconds). */
  stop: (seconds?: number) => Promise<ProcessRun>
  /** The exit code once it has ended (`engine wait`). */
  exitCode: () => Promise<number>
}

/**
 * `engine run -d` with the given options (`--network host`, `-p 127.0.0.1:PORT:3001`, `-e …`,
 * `--read-only` …) then the image and command; removed with its volumes when the test ends.
 */
export async function startContainer (t: { teardown: (fn: () => unknown) => void }, engine: ContainerEngine, options: {
  args?: string[]
  image?: string
  command?: string[]
  name?: string
} = {}): Promise<Container> {
  const name = options.name ?? `bcw-test-${randomUUID().slice(0, 8)}`
  t.teardown(() => engine.run(['rm', '-f', '-v', name], { timeoutMs: 60_000 }))
  const started = await engine.run(['run', '-d', '--name', name, ...(options.args ?? []), options.image ?? IMAGE, ...(options.command ?? [])])
  if (started.code !== 0) throw new Error(`${engine.name} run failed (exit ${started.code}): ${started.stderr.trim()}`)
  const inspect = async (format: string) => (await engine.run(['inspect', '--format', format, name])).stdout.trim()
  const healthy = async () => {
    if (engine.name === 'podman') return (await engine.run(['healthcheck', 'run', name], { timeoutMs: 30_000 })).code === 0
    return (await inspect('{{.State.Health.Status}}')) === 'healthy'
  }
  return {
    name,
    exec: (command, execOptions = {}) => engine.run(['exec',
      ...(execOptions.user ? ['--user', execOptions.user] : []),
      ...Object.entries(execOptions.env ?? {}).flatMap(([key, value]) => ['-e', `${key}=${value}`]),
      name, ...command], { timeoutMs: execOptions.timeoutMs ?? 60_000 }),
    logs: async () => {
      const logs = await engine.run(['logs', name])
      return logs.stdout + logs.stderr
    },
    inspect,
    healthy,
    waitHealthy: async (timeoutMs = 30_000) => {
      const begun = Date.now()
      while (Date.now() - begun < timeoutMs) {
        if (await healthy()) return Date.now() - begun
        await new Promise((resolve) => setTimeout(resolve, 200))
      }
      return undefined
    },
    stop: (seconds = 15) => engine.run(['stop', '-t', String(seconds), name], { timeoutMs: (seconds + 30) * 1000 }),
    exitCode: async () => Number((await engine.run(['wait', name], { timeoutMs: 120_000 })).stdout.trim().split('\n').at(-1)),
  }
}
