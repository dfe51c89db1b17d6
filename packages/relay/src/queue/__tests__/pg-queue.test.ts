import { inject } from 'vitest'
import { createDatabase } from '@oneflow-seg/testkit/postgres'
import { PgQueue } from '../pg-queue'
import type { Queue } from '../queue'
import { describeQueue } from './queue-conformance'

const urls = new WeakMap<Queue, string>()
let n = 0

describeQueue('PostgreSQL', {
  open: async () => {
    const url = await createDatabase(inject('pgAdminUrl'), `conformance_${process.pid}_${n++}`)
    const queue = await PgQueue.open(url)
    urls.set(queue, url)
    return queue
  },
  reopen: async (queue: Queue) => PgQueue.open(urls.get(queue) as string)
})
