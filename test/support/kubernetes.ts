import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'
import { parseAllDocuments, type Document } from 'yaml'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

/** The kustomize base an operator applies. */
export const BASE_DIR = join(ROOT, 'deploy/kubernetes')

/** Files an operator fills in and applies on their own: not listed in the kustomization. */
export const isExample = (file: string) => file.endsWith('.example.yaml')

/** A Kubernetes object as written in a manifest (only what the tests read is typed). */
export interface KubeObject {
  apiVersion: string
  kind: string
  metadata: { name: string, labels?: Record<string, string>, [key: string]: unknown }
  [key: string]: unknown
}

export interface Manifest {
  file: string
  object: KubeObject
  /** The parsed document, comments kept (the measured figures are read from a comment). */
  document: Document
}

/** Every object of every manifest of the base directory (kustomization.yaml aside), in file order. */
export async function readManifests (dir = BASE_DIR): Promise<Manifest[]> {
  const files = (await readdir(dir)).filter((file) => file.endsWith('.yaml') && file !== 'kustomization.yaml').sort()
  const manifests: Manifest[] = []
  for (const file of files) {
    for (const document of parseAllDocuments(await readFile(join(dir, file), 'utf8'))) {
      if ('errors' in document && document.errors.length > 0) throw new Error(`${file}: ${document.errors[0]!.message}`)
      manifests.push({ file, object: document.toJS() as KubeObject, document: document as Document })
    }
  }
  return manifests
}

export interface Kustomization { apiVersion: string, kind: string, resources: string[], [key: string]: unknown }

export async function readKustomization (dir = BASE_DIR): Promise<Kustomization> {
  const [document, ...more] = parseAllDocuments(await readFile(join(dir, 'kustomization.yaml'), 'utf8'))
  if (!document || more.length > 0 || ('errors' in document && document.errors.length > 0)) throw new Error('kustomization.yaml: one YAML document expected')
  return document.toJS() as Kustomization
}

/** The objects `kubectl apply -k` would send for this base: its resources, in the kustomization's order. */
export async function renderBase (dir = BASE_DIR): Promise<KubeObject[]> {
  const { resources } = await readKustomization(dir)
  const manifests = await readManifests(dir)
  return resources.flatMap((file) => manifests.filter((manifest) => manifest.file === file).map((manifest) => structuredClone(manifest.object)))
}

/**
 * What kubernetes-models' JSON schema (the API's OpenAPI definitions) says is wrong with an
 * object: `[]` when it validates. An apiVersion or kind it does not know is an error too.
 */
export async function schemaErrors (object: KubeObject): Promise<string[]> {
  let models: Record<string, unknown>
  try {
    models = await import(`kubernetes-models/${object.apiVersion}`) as Record<string, unknown>
  } catch {
    return [`unknown apiVersion ${object.apiVersion}`]
  }
  const Model = models[object.kind] as (new (data: unknown) => { validate: () => void }) | undefined
  if (typeof Model !== 'function') return [`unknown kind ${object.kind} in ${object.apiVersion}`]
  try {
    new Model(object).validate()
    return []
  } catch (err) {
    return [(err as Error).message]
  }
}

/**
 * The fields no API type has, for each object, by its index: what the API server's strict field
 * validation (kubectl's default) refuses and kubernetes-models' schema lets through (its schemas
 * allow any extra property, so a misspelt `readinesProbe` would pass them). Each object is
 * type-checked as an object literal of kubernetes-models' interface for its kind, where an
 * unknown property is an error.
 */
export function unknownFields (objects: KubeObject[]): Array<{ index: number, message: string }> {
  // Inside the project, so that `kubernetes-models` resolves as from any test.
  const virtual = join(ROOT, 'test', '__manifests__.ts')
  const lines = objects.map((object, index) =>
    `import type { I${object.kind} as T${index} } from 'kubernetes-models/${object.apiVersion}/${object.kind}'\n` +
    `export const m${index}: T${index} = ${JSON.stringify(object)}\n`)
  const text = lines.join('')
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2023,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    types: [],
  }
  const host = ts.createCompilerHost(options)
  const { getSourceFile, fileExists } = host
  host.getSourceFile = (name, language, ...rest) => name === virtual ? ts.createSourceFile(name, text, language) : getSourceFile(name, language, ...rest)
  host.fileExists = (name) => name === virtual || fileExists(name)
  const program = ts.createProgram([virtual], options, host)
  const source = program.getSourceFile(virtual)!
  // Line 2k+1 (0-based) holds object k.
  return ts.getPreEmitDiagnostics(program, source).map((diagnostic) => ({
    index: Math.floor(source.getLineAndCharacterOfPosition(diagnostic.start ?? 0).line / 2),
    message: ts.flattenDiagnosticMessageText(diagnostic.messageText, ' '),
  }))
}

interface Container {
  name: string
  image: string
  command?: string[]
  env?: Array<{ name: string, value?: string }>
  envFrom?: Array<{ configMapRef?: { name: string }, secretRef?: { name: string } }>
  ports?: Array<{ name?: string, containerPort: number }>
  [key: string]: unknown
}

/** The parts of a Deployment the tests read. */
export interface DeploymentObject extends KubeObject {
  spec: {
    replicas: number
    strategy?: unknown
    selector: { matchLabels: Record<string, string> }
    template: {
      metadata: { labels: Record<string, string> }
      spec: {
        initContainers?: Container[]
        containers: Container[]
        securityContext?: Record<string, unknown>
        terminationGracePeriodSeconds?: number
        hostNetwork?: boolean
        [key: string]: unknown
      }
    }
  }
}

/** The one object of `kind` among `objects` (an error when there is none or several). */
export function only<T extends KubeObject = KubeObject> (objects: KubeObject[], kind: string): T {
  const found = objects.filter((object) => object.kind === kind)
  if (found.length !== 1) throw new Error(`expected one ${kind}, found ${found.length}`)
  return found[0] as T
}
