import { execFile } from 'node:child_process'
import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'

const execFileAsync = promisify(execFile)
export const ROOT = new URL('../..', import.meta.url).pathname

export interface CliResult { code: number, stdout: string, stderr: string }

export interface CompiledService {
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
  await execFileAsync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', join(dir, 'dist')])
  return {
    dir,
    run: (entry, args, env) => runNode(join(dir, 'dist', entry), args, env),
  }
}

export async function runNode (script: string, args: string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  try {
    // tap's process tracking rides on NODE_OPTIONS; an operator's shell has none.
    const { stdout, stderr } = await execFileAsync(process.execPath, [script, ...args], { env: { ...env, NODE_OPTIONS: '' }, timeout: 30_000 })
    return { code: 0, stdout, stderr }
  } catch (err) {
    const failed = err as { code?: number | string, stdout?: string, stderr?: string }
    return { code: typeof failed.code === 'number' ? failed.code : -1, stdout: failed.stdout ?? '', stderr: failed.stderr ?? '' }
  }
}
