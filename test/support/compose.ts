import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ROOT } from './compiled.ts'
import { plainEnv, type ContainerEngine } from './container-engine.ts'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { runProcess, type ProcessRun } from './process.ts'

/** Where .ci/install-engine.sh unpacks Docker Compose v2 (Debian 13's docker-compose package). */
const CACHED_COMPOSE = `${process.env.BCW_CI_CACHE ?? '/var/cache/bcw-ci'}/compose-2.26.1/usr/libexec/docker/cli-plugins/docker-compose`

/** Docker Compose v2 as `[command, ...prefix args]`, or why there is none (a skip reason). */
export async function composeTool (): Promise<string[] | string> {
  for (const candidate of [process.env.BCW_COMPOSE, CACHED_COMPOSE]) {
    if (candidate && existsSync(candidate)) return [candidate]
  }
  const plugin = await runProcess('docker', ['compose', 'version'], { env: plainEnv() }).catch(() => undefined)
  if (plugin?.code === 0) return ['docker', 'compose']
  return 'Docker Compose v2 is not installed here (.ci/install-engine.sh unpacks it from Debian 13)'
}

export interface ComposeProject {
  name: string
  /** `compose -p NAME -f docker-compose.yml …args` to its end, in the project's environment. */
  run: (args: string[], timeoutMs?: number) => Promise<ProcessRun>
  /** The container of a service (`NAME-SERVICE-1`). */
  container: (service: string) => string
  /** Runs the engine's health checks of the project's containers once (podman has no timers without systemd). */
  checkHealth: () => Promise<void>
  /** `down -v`: containers, networks and volumes removed. */
  destroy: () => Promise<void>
}

/**
 * The committed docker-compose.yml under project `name`, run by Compose v2 against the engine:
 * docker's own daemon, or for podman a `podman system service` socket of this test's own.
 * `env` holds the variables the file reads (POSTGRES_PASSWORD, WEBHOOK_SECRET, WEBHOOK_PUBLISH…).
 */
export async function composeProject (t: { teardown: (fn: () => unknown) => void }, engine: ContainerEngine, tool: string[], name: string, env: Record<string, string>): Promise<ComposeProject> {
  const projectEnv: Record<string, string> = { ...env }
  let stopService = async () => {}
  if (engine.name === 'podman') {
    const dir = await mkdtemp(join(tmpdir(), 'bcw-podman-api-'))
    const socket = join(dir, 'podman.sock')
    const service = spawn('podman', ['system', 'service', '--time=0', `unix://${socket}`], { env: plainEnv(), stdio: 'ignore' })
    const exited = once(service, 'exit')
    stopService = async () => {
      service.kill('SIGTERM')
      await exited
      await rm(dir, { recursive: true, force: true })
    }
    for (let i = 0; i < 100 && !existsSync(socket); i++) await new Promise((resolve) => setTimeout(resolve, 100))
    // BuildKit's own image cannot be pulled here: builds go through the classic API (podman's).
    Object.assign(projectEnv, { DOCKER_HOST: `unix://${socket}`, DOCKER_BUILDKIT: '0' })
  }
  const [command, ...prefix] = tool as [string, ...string[]]
  const run = (args: string[], timeoutMs = 300_000) => runProcess(command, [...prefix, '-p', name, '-f', join(ROOT, 'docker-compose.yml'), ...args], {
    cwd: ROOT, env: plainEnv(projectEnv), timeoutMs,
  })
  const project: ComposeProject = {
    name,
    run,
    container: (service) => `${name}-${service}-1`,
    checkHealth: async () => {
      if (engine.name !== 'podman') return
      const listed = await engine.run(['ps', '-q', '--filter', `label=com.docker.compose.project=${name}`])
      await Promise.all(listed.stdout.split('\n').filter(Boolean).map((id) => engine.run(['healthcheck', 'run', id], { timeoutMs: 30_000 })))
    },
    destroy: async () => { await run(['down', '-v', '--remove-orphans', '-t', '5'], 120_000) },
  }
  // One teardown, in this order: the project goes down while the API socket still answers.
  t.teardown(async () => {
    try {
      await project.destroy()
    } finally {
      await stopService()
    }
  })
  return project
}
