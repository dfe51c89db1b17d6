/**
 * Starts one throwaway PostgreSQL cluster for the relay's tests (or uses ONEFLOW_TEST_PG_URL) and stops it at the end,
 * and makes the directory the tests' temporary files go in (tempDir), deleted at the end.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestProject } from 'vitest/node'
import { startThrowawayPostgres } from '@oneflow-seg/testkit/postgres'

declare module 'vitest' {
  export interface ProvidedContext {
    pgAdminUrl: string
    tmpRoot: string
  }
}

export default async function setup(project: TestProject): Promise<() => void> {
  const external = process.env.ONEFLOW_TEST_PG_URL
  const cluster = external ? undefined : await startThrowawayPostgres()
  project.provide('pgAdminUrl', external ?? (cluster as { url: string }).url)
  const tmpRoot = mkdtempSync(join(tmpdir(), 'oneflow-relay-tests-'))
  project.provide('tmpRoot', tmpRoot)
  return () => {
    cluster?.stop()
    rmSync(tmpRoot, { recursive: true, force: true })
  }
}
