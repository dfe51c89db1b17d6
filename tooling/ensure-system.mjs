#!/usr/bin/env node
// Makes sure the system programs the tests drive are present: Debian's Chromium (browser tests), podman with
// runc and debootstrap (the relay's container image, built on a base made from Debian's packages), and
// PostgreSQL (the relay's scale-out queue; the tests start a throwaway cluster of their own on 127.0.0.1 and
// stop it at the end). On a fresh Debian machine, as root, it installs what is missing with apt-get;
// otherwise it says what to install.
import { execSync, spawnSync } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'

const hasPostgres = () =>
  existsSync('/usr/lib/postgresql') &&
  readdirSync('/usr/lib/postgresql').some((v) => existsSync(`/usr/lib/postgresql/${v}/bin/initdb`))
const onPath = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0
const needs = [
  {
    what: 'Chromium (browser tests)',
    present: () => existsSync(process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'),
    apt: ['chromium']
  },
  {
    what: "podman, runc, debootstrap and systemd-analyze (the relay's container image and unit tests)",
    present: () =>
      ['podman', 'runc', 'debootstrap', 'systemd-analyze'].every(
        (cmd) => onPath(cmd) || existsSync(`/usr/sbin/${cmd}`)
      ),
    apt: ['podman', 'runc', 'debootstrap', 'systemd']
  },
  {
    what: 'PostgreSQL (relay scale-out tests)',
    present: () => Boolean(process.env.ONEFLOW_TEST_PG_URL) || hasPostgres(),
    apt: ['postgresql']
  }
]

const missing = needs.filter((n) => !n.present())
if (missing.length === 0) process.exit(0)

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0
const hasApt = spawnSync('sh', ['-c', 'command -v apt-get'], { stdio: 'ignore' }).status === 0
const packages = missing.flatMap((n) => n.apt)
if (!isRoot || !hasApt) {
  console.error(
    `Missing: ${missing.map((n) => n.what).join(', ')}. Install with: sudo apt-get install -y ${packages.join(' ')}`
  )
  process.exit(1)
}
console.log(`Installing ${packages.join(', ')} from Debian's packages…`)
execSync(
  `apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${packages.join(' ')} >/dev/null`,
  { stdio: 'inherit', shell: '/bin/sh' }
)
