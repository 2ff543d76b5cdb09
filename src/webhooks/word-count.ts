/**
 * Counts runs of non-whitespace, the same as `text.match(/\S+/g)?.length ?? 0`, with a plain loop:
 * on a 94 KB book the regex cost more than the signature check.
 */
export function countWords (text: string): number {
  let words = 0
  let inWord = false
  for (let i = 0; i < text.length; i++) {
    const space = isWhitespace(text.charCodeAt(i))
    if (!space && !inWord) words++
    inWord = !space
  }
  return words
}

/** The code units JavaScript's `\s` matches. */
function isWhitespace (code: number): boolean {
  if (code <= 32) return code === 32 || (code >= 9 && code <= 13)
  if (code < 160) return false
  return code === 160 || code === 5760 || (code >= 8192 && code <= 8202) || code === 8232 ||
    code === 8233 || code === 8239 || code === 8287 || code === 12288 || code === 65279
}
