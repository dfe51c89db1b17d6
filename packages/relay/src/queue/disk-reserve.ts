/**
 * Room kept back on the queue's disk so that a full disk recovers by itself. SQLite needs pages for everything
 * delivery does — a lease, a settled event, a checkpoint, giving space back — so a disk the queue has filled to
 * the last byte would otherwise stay full even after 1Flow answers again. The reserve is a file of real blocks
 * beside the database; the first write the disk refuses deletes it, delivery then has that room to work in (and
 * frees far more), ingest is refused meanwhile so clients cannot take the room instead, and the reserve is made
 * again once the disk has twice its size free. See docs/relay-resilience.md.
 */
import { closeSync, fsyncSync, openSync, rmSync, statfsSync, statSync, writeSync } from 'node:fs'
import { dirname } from 'node:path'

const CHUNK = 1024 * 1024

export class DiskReserve {
  private armed = false

  constructor(
    /** The reserve file, beside the database (the same file system). */
    readonly file: string,
    readonly bytes: number
  ) {}

  /** True while the reserve is in place (the disk is not known to be full). */
  get isArmed(): boolean {
    return this.armed
  }

  /** Makes the reserve (or finds it whole from an earlier run); false when the disk has no room for it. */
  arm(): boolean {
    if (this.bytes <= 0) return false
    try {
      if (statSync(this.file).size === this.bytes) return (this.armed = true)
    } catch {
      // Not there yet.
    }
    let fd: number | undefined
    try {
      fd = openSync(this.file, 'w')
      // Zeros written, not a sparse file: the blocks are really taken, so releasing them gives room back.
      const zeros = Buffer.alloc(Math.min(CHUNK, this.bytes))
      for (let written = 0; written < this.bytes;)
        written += writeSync(fd, zeros, 0, Math.min(zeros.length, this.bytes - written))
      fsyncSync(fd)
      closeSync(fd)
      return (this.armed = true)
    } catch {
      if (fd !== undefined) closeSync(fd)
      rmSync(this.file, { force: true })
      return (this.armed = false)
    }
  }

  /** The disk is full: deletes the reserve so delivery has room to free more. */
  release(): void {
    if (!this.armed) return
    rmSync(this.file, { force: true })
    this.armed = false
  }

  /** Makes the reserve again once the disk has twice its size free; true when it is in place. */
  rearmIfRoom(): boolean {
    if (this.armed || this.bytes <= 0) return this.armed
    try {
      const fs = statfsSync(dirname(this.file))
      if (fs.bavail * fs.bsize < 2 * this.bytes) return false
    } catch {
      return false
    }
    return this.arm()
  }
}
