/**
 * A throwaway PostgreSQL cluster on 127.0.0.1 from Debian's packages (no Docker here): initdb in a temp
 * directory, started on a free port, stopped and deleted afterwards. As root it runs as the `postgres` user
 * (PostgreSQL refuses to run as root). A watchdog stops it when the process that started it dies without
 * calling stop() (a test runner killed by turbo when another package fails), so no cluster outlives its run.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export class PostgresSetupError extends Error {
  override readonly name = 'PostgresSetupError'
}

export interface ThrowawayPostgres {
  /** Admin URL of the `postgres` database (user `oneflow`, trust auth on 127.0.0.1 only). */
  readonly url: string
  readonly port: number
  /** Stops the server at once (`pg_ctl stop -m immediate`: a crash, as far as clients can tell); the data stays. */
  crash(): void
  /** Starts the server again, on the same port and data. */
  restart(): void
  /** Stops the server and deletes its data. */
  stop(): void
}

export function postgresBinDir(): string | undefined {
  const root = '/usr/lib/postgresql'
  if (!existsSync(root)) return undefined
  const versions = readdirSync(root)
    .filter((v) => existsSync(join(root, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a))
  return versions[0] ? join(root, versions[0], 'bin') : undefined
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

export async function startThrowawayPostgres(): Promise<ThrowawayPostgres> {
  const bin = postgresBinDir()
  if (!bin)
    throw new PostgresSetupError(
      'PostgreSQL is not installed: apt-get install -y postgresql (pnpm test does this when run as root)'
    )
  const dir = mkdtempSync(join(tmpdir(), 'oneflow-pg-'))
  const data = join(dir, 'data')
  const asRoot = process.getuid?.() === 0
  const run = (cmd: string, args: string[]) => {
    const full = asRoot ? ['runuser', ['-u', 'postgres', '--', join(bin, cmd), ...args]] : [join(bin, cmd), args]
    const r = spawnSync(full[0] as string, full[1] as string[], { encoding: 'utf8' })
    if (r.status !== 0) throw new PostgresSetupError(`${cmd} failed: ${r.stderr || r.stdout}`)
  }
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim())
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim())
    chownSync(dir, uid, gid)
    chmodSync(dir, 0o700)
  }
  const port = await freePort()
  run('initdb', ['-D', data, '-U', 'oneflow', '--auth=trust', '-E', 'UTF8', '--no-sync'])
  const startServer = () =>
    run('pg_ctl', [
      '-D',
      data,
      '-l',
      join(dir, 'postgres.log'),
      '-w',
      '-o',
      `-p ${port} -k ${dir} -h 127.0.0.1 -c max_connections=300 -c fsync=on`,
      'start'
    ])
  startServer()
  const url = `postgres://oneflow@127.0.0.1:${port}/postgres`
  const pgCtlStop = [
    ...(asRoot ? ['runuser', '-u', 'postgres', '--'] : []),
    join(bin, 'pg_ctl'),
    '-D',
    data,
    '-m',
    'immediate',
    'stop'
  ]
  const watchdog = spawn(
    'sh',
    [
      '-c',
      'while kill -0 "$1" 2>/dev/null; do sleep 1; done; shift; dir="$1"; shift; "$@" >/dev/null 2>&1; rm -rf "$dir"',
      'watchdog',
      String(process.pid),
      dir,
      ...pgCtlStop
    ],
    { detached: true, stdio: 'ignore' }
  )
  watchdog.unref()
  return {
    url,
    port,
    crash: () => run('pg_ctl', ['-D', data, '-m', 'immediate', 'stop']),
    restart: startServer,
    stop() {
      watchdog.kill('SIGKILL')
      try {
        // Already stopped (a test crashed it and did not get to restart it) is fine.
        if (existsSync(join(data, 'postmaster.pid'))) run('pg_ctl', ['-D', data, '-m', 'immediate', 'stop'])
      } finally {
        rmSync(dir, { recursive: true, force: true })
      }
    }
  }
}

/** Creates an empty database on the cluster at `adminUrl`; returns its URL. */
export async function createDatabase(adminUrl: string, name: string): Promise<string> {
  const { default: pg } = await import('pg')
  const client = new pg.Client({ connectionString: adminUrl })
  await client.connect()
  try {
    await client.query(`CREATE DATABASE "${name.replace(/[^\w]/g, '_')}"`)
  } finally {
    await client.end()
  }
  const url = new URL(adminUrl)
  url.pathname = `/${name.replace(/[^\w]/g, '_')}`
  return url.toString()
}
