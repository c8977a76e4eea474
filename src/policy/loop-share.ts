/** How much of the event loop each sender spends on statement checks, and who is past their share. */
/**
 * How much of the event loop each sender (token subject, else address) spends on statement
 * checks, per window of LOOP_WINDOW_MS. A sender past LOOP_SHARE_MS of it, or everyone once
 * all together are past LOOP_TOTAL_MS, has its uncached texts parsed on the threads, where
 * the fair queue serves clients in turn: a flood of distinct small statements then slows its
 * sender, not the event loop every client shares (red team: 4 x 10,000 pipelined statements
 * held a bystander's cached SELECT 1 for 8.7 s).
 */
const LOOP_WINDOW_MS = 100;
const LOOP_SHARE_MS = 10;
const LOOP_TOTAL_MS = 40;
/** Senders tracked at once; past this the window starts over for all (a bound, not a policy). */
const LOOP_SENDERS = 10_000;

export class LoopShare {
  private window = 0;
  private total = 0;
  private readonly spent = new Map<string, number>();

  private roll(now: number): void {
    if (now - this.window < LOOP_WINDOW_MS && this.spent.size < LOOP_SENDERS) return;
    this.window = now;
    this.total = 0;
    this.spent.clear();
  }

  /** A check by `sender` that began at `started` (performance.now()) has just ended. */
  charge(sender: string, started: number): void {
    const now = performance.now();
    const ms = now - started;
    this.roll(now);
    this.total += ms;
    this.spent.set(sender, (this.spent.get(sender) ?? 0) + ms);
  }

  over(sender: string): boolean {
    this.roll(performance.now());
    return this.total >= LOOP_TOTAL_MS || (this.spent.get(sender) ?? 0) >= LOOP_SHARE_MS;
  }
}
