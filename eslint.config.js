import neostandard from 'neostandard'

export default neostandard({
  ts: true,
  ignores: ['dist/**', 'migrations/**', 'coverage/**', '.tap/**', '.data/**', 'node_modules/**'],
})
