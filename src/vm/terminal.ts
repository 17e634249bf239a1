// The guest's serial console in xterm.js. v86 hands out one byte per
// `serial0-output-byte` event; writing each byte to xterm on its own would
// re-render per byte, so bytes are gathered and written once per animation
// frame (xterm decodes UTF-8 across writes itself). Keys typed go back to
// the guest through `send` (v86's serial0_send) unchanged: busybox's shell
// does its own line editing, as on a real serial line.
//
// The terminal also keeps the last bytes as text (`transcript`), which the
// page's status line and the Playwright test read: the canvas xterm draws
// to has no text a test could find.

import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';
import '@xterm/xterm/css/xterm.css';

/** Characters of console output kept for `transcript`. */
const TRANSCRIPT_CHARS = 64 * 1024;

export class SerialTerminal {
  readonly term: Terminal;
  readonly #fit = new FitAddon();
  #pending: number[] = [];
  #scheduled = false;
  #transcript = '';
  readonly #decoder = new TextDecoder();
  /** Where keystrokes go (set once the VM runs). */
  send: ((data: string) => void) | null = null;
  /** Called with each chunk of decoded output. */
  onOutput: ((text: string) => void) | null = null;

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
    this.#pending.push(byte);
    if (this.#scheduled) return;
    this.#scheduled = true;
    requestAnimationFrame(() => this.#drain());
  }

  /** A host-side message in the console (dim, so it is not mistaken for the guest's). */
  note(text: string): void {
    this.term.write(`\x1b[2m${text.replace(/\n/g, '\r\n')}\x1b[0m\r\n`);
  }

  /** The console's recent output as text. */
  get transcript(): string {
    return this.#transcript;
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
