// esbuild's text loader (package.json's --loader:.css=text) turns an
// imported stylesheet into its text.
declare module "*.css" {
  const text: string;
  export default text;
}
