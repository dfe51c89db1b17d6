#!/usr/bin/env node
// `pnpm image [-- engine build options]`: builds the relay's container image from this clone. It builds and
// packs @oneflow-seg/core and @oneflow-seg/relay (the tarballs npm would publish), puts them beside
// deploy/Containerfile and deploy/oneflow-relay.json in a build context of its own, and runs podman (or docker)
// build. Extra arguments go to the engine, e.g. `pnpm image --build-arg NODE_IMAGE=…` or `-t my/relay:1`.
// ONEFLOW_IMAGE_ENGINE picks the engine; without it, podman when installed, else docker.
import { spawnSync } from 'node:child_process'
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0
const engine = process.env.ONEFLOW_IMAGE_ENGINE ?? (has('podman') ? 'podman' : has('docker') ? 'docker' : undefined)
if (!engine) {
  console.error('pnpm image needs podman or docker (e.g. sudo apt-get install -y podman).')
  process.exit(1)
}
const run = (cmd, args, cwd = root) => {
  const r = spawnSync(cmd, args, { cwd, stdio: 'inherit' })
  if (r.status !== 0) {
    console.error(`pnpm image: ${cmd} ${args.join(' ')} failed (exit ${r.status ?? r.signal}).`)
    process.exit(1)
  }
}

const { version } = JSON.parse(readFileSync(join(root, 'packages/relay/package.json'), 'utf8'))
const args = process.argv.slice(2).filter((a) => a !== '--')
const tagged = args.includes('-t') || args.includes('--tag')
const context = mkdtempSync(join(tmpdir(), 'oneflow-relay-image-'))
try {
  console.log('pnpm image: building and packing @oneflow-seg/core and @oneflow-seg/relay…')
  run('pnpm', ['exec', 'turbo', 'run', 'build', '--filter=@oneflow-seg/relay...', '--output-logs=errors-only'])
  mkdirSync(join(context, 'packages'))
  for (const pkg of ['core', 'relay'])
    run('pnpm', ['pack', '--pack-destination', join(context, 'packages')], join(root, 'packages', pkg))
  for (const file of ['Containerfile', 'oneflow-relay.json'])
    copyFileSync(join(root, 'deploy', file), join(context, file))
  const tags = tagged ? [] : ['-t', `oneflow-relay:${version}`, '-t', 'oneflow-relay:latest']
  // Docker's format keeps HEALTHCHECK (podman's default OCI format drops it).
  const format = engine.endsWith('podman') ? ['--format', 'docker'] : []
  run(engine, ['build', ...format, ...tags, ...args, '-f', join(context, 'Containerfile'), context])
  console.log(`pnpm image: built ${tagged ? 'the image' : `oneflow-relay:${version} (also :latest)`} with ${engine}.`)
} finally {
  rmSync(context, { recursive: true, force: true })
}
