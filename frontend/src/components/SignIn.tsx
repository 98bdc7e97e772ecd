/** The sign-in form a token-protected server gets instead of pages that cannot load: one field,
 * "API token". The token is kept in this browser (api/auth.ts) and sent with every request. */
import { useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { auth } from "../api/auth";

export function SignIn({ rejected }: { rejected: boolean }) {
  const qc = useQueryClient();
  const [token, setToken] = useState("");
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (!token.trim()) return;
    auth.signIn(token);
    void qc.resetQueries(); // everything that failed with 401 loads again, now with the token
  };
  return (
    <section className="signin state" aria-labelledby="signin-h">
      <h1 id="signin-h">Sign in</h1>
      <p>This server needs an API token: one of the values of <code>RLHFKIT_API_TOKENS</code> it was started with.</p>
      {rejected && <p className="field-error" role="alert">The server did not accept the stored token. Enter a valid one.</p>}
      <form onSubmit={submit} className="field">
        <label htmlFor="api-token">API token</label>
        <input id="api-token" name="token" type="password" autoComplete="current-password" spellCheck={false}
               value={token} onChange={(e) => setToken(e.target.value)} required autoFocus />
        <div className="form-actions"><button type="submit" className="primary">Sign in</button></div>
      </form>
      <p className="muted">
        Kept in this browser (localStorage) and sent as <code>Authorization: Bearer</code>. A link ending in
        {" "}<code>#token=&lt;token&gt;</code> signs in too; the token is then removed from the address bar.
      </p>
    </section>
  );
}
