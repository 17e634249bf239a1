// The guest's serial console in xterm.js. v86 hands out one byte per
// `serial0-output-byte` event; writing each byte to xterm on its own would
// re-render per byte, so bytes are gathered and written once per animation
// frame (xterm decodes UTF-8 across writes itself). Keys typed go back to
// the guest through `send` (v86's serial0_send) unchanged: busybox's shell
// does its own line editing, as on a real serial line.
//
// The initramfs (e2e/v86/provision.ts, shared with the v86 boot test)
// reports on lines that start with `VBW-`. Those are for programs, not
// people: while `hideMarks` is on, such whole lines never reach the screen
// and go to `onMark` instead (the page turns them into its own notes and
// keeps them for tests). A line is held back only while its first bytes
// could still be `VBW-`, so other output is not delayed past its fourth byte.
//
// The terminal also keeps what it showed as text (`transcript`), which the
// page's status line reads: the canvas xterm draws to has no text.

import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';
import '@xterm/xterm/css/xterm.css';

/** Characters of console output kept for `transcript`. */
const TRANSCRIPT_CHARS = 64 * 1024;
/** How the initramfs's lines for programs begin. */
const MARK_PREFIX = [...'VBW-'].map((c) => c.charCodeAt(0));
const LF = 0x0a;
/** A mark line longer than this is shown after all (not one of ours, or runaway output). */
const MARK_MAX_BYTES = 512;

export class SerialTerminal {
  readonly term: Terminal;
  readonly #fit = new FitAddon();
  #pending: number[] = [];
  #scheduled = false;
  #transcript = '';
  #decoder = new TextDecoder();
  /** Whether the next byte begins a line. */
  #lineStart = true;
  /** Bytes at a line's start that match MARK_PREFIX so far (shown once they stop matching). */
  #held: number[] = [];
  /** The mark line being read (after its prefix), or null outside one. */
  #mark: number[] | null = null;
  /** Where keystrokes go (set once the VM runs). */
  send: ((data: string) => void) | null = null;
  /** Called with each chunk of decoded output that reached the screen. */
  onOutput: ((text: string) => void) | null = null;
  /** Lines starting with `VBW-` are kept off the screen and handed here (without the line end). */
  hideMarks = true;
  onMark: ((line: string) => void) | null = null;

  constructor(container: HTMLElement) {
    this.term = new Terminal({
      convertEol: false,
      cursorBlink: true,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", monospace',
      fontSize: 14,
      scrollback: 5000,
      theme: { background: '#101418', foreground: '#d7dde4', cursor: '#7fd1b9' },
    });
    this.term.loadAddon(this.#fit);
    this.term.open(container);
    this.fit();
    new ResizeObserver(() => this.fit()).observe(container);
    this.term.onData((data) => this.send?.(data));
  }

  fit(): void {
    try {
      this.#fit.fit();
    } catch {
      // Not laid out yet (display: none): the next resize fits it.
    }
  }

  /** One byte from the guest's UART. */
  pushByte(byte: number): void {
    if (this.#mark) {
      if (byte === LF || this.#mark.length >= MARK_MAX_BYTES) this.#endMark(byte);
      else this.#mark.push(byte);
      return;
    }
    if (this.#lineStart && this.hideMarks) {
      this.#held.push(byte);
      const n = this.#held.length;
      if (byte === MARK_PREFIX[n - 1]) {
        if (n === MARK_PREFIX.length) {
          this.#mark = this.#held;
          this.#held = [];
        }
        return;
      }
      const held = this.#held;
      this.#held = [];
      this.#lineStart = false;
      for (const b of held) this.#show(b);
      return;
    }
    this.#show(byte);
  }

  /** A host-side message in the console (dim, so it is not mistaken for the guest's). */
  note(text: string): void {
    this.#drain(); // after the guest's output that came before it
    this.term.write(`\x1b[2m${text.replace(/\n/g, '\r\n')}\x1b[0m\r\n`);
  }

  /** Wipe the screen and everything kept about the last machine's output. */
  clear(): void {
    this.term.reset();
    this.#pending = [];
    this.#transcript = '';
    this.#decoder = new TextDecoder();
    this.#lineStart = true;
    this.#held = [];
    this.#mark = null;
  }

  /** The console's recent output as text, as shown. */
  get transcript(): string {
    return this.#transcript;
  }

  #endMark(byte: number): void {
    const bytes = this.#mark!;
    this.#mark = null;
    if (byte !== LF) {
      // Too long for a mark: show it as it came.
      for (const b of bytes) this.#show(b);
      this.#show(byte);
      return;
    }
    this.#lineStart = true;
    this.onMark?.(new TextDecoder().decode(Uint8Array.from(bytes)).replace(/\r$/, ''));
  }

  #show(byte: number): void {
    this.#lineStart = byte === LF;
    this.#pending.push(byte);
    if (this.#scheduled) return;
    this.#scheduled = true;
    requestAnimationFrame(() => this.#drain());
  }

  #drain(): void {
    this.#scheduled = false;
    if (this.#pending.length === 0) return;
    const bytes = Uint8Array.from(this.#pending);
    this.#pending = [];
    this.term.write(bytes);
    const text = this.#decoder.decode(bytes, { stream: true });
    this.#transcript = (this.#transcript + text).slice(-TRANSCRIPT_CHARS);
    this.onOutput?.(text);
  }
}
