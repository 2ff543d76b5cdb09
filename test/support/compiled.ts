import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises'
import { join } from 'node:path'
import { runProcess } from './process.ts'

export const ROOT = new URL('../..', import.meta.url).pathname

export interface CliResult { code: number, stdout: string, stderr: string }

interface CompiledService {
  /** The project-like directory: `dist/` compiled from src, `migrations/` beside it. */
  dir: string
  /** Runs `node dist/<entry> …args` to completion, as an operator would (exit code, stdout, stderr). */
  run: (entry: string, args: string[], env: NodeJS.ProcessEnv) => Promise<CliResult>
}

/**
 * What `npm run build` produces (and the package.json and migrations/ beside it), compiled into a directory of this test file's own: other test
 * files running at the same time never see a half-rebuilt dist/. It sits under node_modules/.cache
 * so the compiled code resolves its packages from the project's node_modules.
 */
export async function compileService (t: { teardown: (fn: () => unknown) => void }): Promise<CompiledService> {
  const cache = join(ROOT, 'node_modules', '.cache')
  await mkdir(cache, { recursive: true })
  const dir = await mkdtemp(join(cache, 'bcw-build-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await symlink(join(ROOT, 'migrations'), join(dir, 'migrations'))
  await symlink(join(ROOT, 'package.json'), join(dir, 'package.json'))
  const tsc = await runProcess(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', join(dir, 'dist')])
  if (tsc.code !== 0) throw new Error(`tsc failed:\n${tsc.stdout}${tsc.stderr}`)
  return {
    dir,
    run: (entry, args, env) => runNode(join(dir, 'dist', entry), args, env),
  }
}

/** `node <script> …args` to its end, as an operator runs it: exit code (-1 for a signal or the 30 s timeout), stdout, stderr. */
async function runNode (script: string, args: string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  // tap's process tracking rides on NODE_OPTIONS; an operator's shell has none.
  const run = await runProcess(process.execPath, [script, ...args], { env: { ...env, NODE_OPTIONS: '' }, timeoutMs: 30_000 })
  return { code: run.code ?? -1, stdout: run.stdout, stderr: run.stderr }
}
