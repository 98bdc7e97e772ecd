/** The shell: navigation, theme switch, the reconnecting banner, and the routes (pages past the
 * runs list load on demand so the first route stays small) — or the sign-in form when the server
 * wants a token it does not have. */
import { Component, lazy, Suspense, useSyncExternalStore, type ErrorInfo, type ReactNode } from "react";
import { NavLink, Route, Routes, useLocation } from "react-router-dom";
import { auth } from "./api/auth";
import { Loading } from "./components/common";
import { SignIn } from "./components/SignIn";
import { useRunsLive } from "./hooks/useRunsLive";
import { useTheme } from "./hooks/useTheme";
import { connection } from "./lib/connection";
import { RunsPage } from "./pages/RunsPage";

const NewRunPage = lazy(() => import("./pages/NewRunPage"));
const RunPage = lazy(() => import("./pages/RunPage"));
const ComparePage = lazy(() => import("./pages/ComparePage"));
// benchmarks/bench_ui.py's page: only in `npm run build:bench` builds (see lib/bench.ts)
const ChartBench = import.meta.env.VITE_RLHFKIT_BENCH === "1" ? lazy(() => import("./pages/ChartBench")) : null;

function Banner() {
  const down = useSyncExternalStore(connection.subscribe, connection.isDown);
  if (!down) return null;
  return (
    <div className="banner" role="alert" aria-live="assertive">
      Disconnected — reconnecting… Live updates resume where they stopped.
    </div>
  );
}

/** A render error shows what happened and a way out instead of a blank page. */
class ErrorBoundary extends Component<{ children: ReactNode }, { error: Error | null }> {
  state = { error: null as Error | null };
  static getDerivedStateFromError(error: Error) {
    return { error };
  }
  componentDidCatch(error: Error, info: ErrorInfo) {
    console.error("render error", error, info.componentStack);
  }
  render() {
    if (!this.state.error) return this.props.children;
    return (
      <div className="state error" role="alert">
        <strong>This page failed to render:</strong> {this.state.error.message}
        <div><button type="button" onClick={() => this.setState({ error: null })}>Try again</button> or go back to <a href="/">the runs list</a>.</div>
      </div>
    );
  }
}

function Routed() {
  const location = useLocation();
  return (
    <ErrorBoundary key={location.pathname}>
      <Suspense fallback={<Loading what="page" />}>
        <Routes>
          <Route path="/" element={<RunsPage />} />
          <Route path="/new" element={<NewRunPage />} />
          <Route path="/runs/:id" element={<RunPage />} />
          <Route path="/compare" element={<ComparePage />} />
          {ChartBench && <Route path="/bench/chart" element={<ChartBench />} />}
          <Route path="*" element={<div className="state">No such page. <NavLink to="/">Back to runs</NavLink></div>} />
        </Routes>
      </Suspense>
    </ErrorBoundary>
  );
}

/** What needs the API: the status socket and the pages. Remounted (key) after each sign-in so
 * queries and sockets start over with the token. */
function Signed() {
  useRunsLive();
  return <Routed />;
}

export function App() {
  const [theme, toggle] = useTheme();
  const session = useSyncExternalStore(auth.subscribe, auth.snapshot);
  return (
    <>
      <a className="skip" href="#main">Skip to content</a>
      <header className="topbar">
        <NavLink to="/" className="brand">RLHF Systems Kit</NavLink>
        <nav aria-label="Main">
          <NavLink to="/" end>Runs</NavLink>
          <NavLink to="/new">New run</NavLink>
          <NavLink to="/compare">Compare</NavLink>
        </nav>
        <button type="button" className="theme" onClick={toggle} aria-label={`Switch to ${theme === "dark" ? "light" : "dark"} theme`}>
          {theme === "dark" ? "☀ Light" : "☾ Dark"}
        </button>
        {!session.needed && auth.token() !== null && (
          <button type="button" className="theme" onClick={() => auth.signOut()}>Sign out</button>
        )}
      </header>
      <Banner />
      <main id="main" tabIndex={-1}>
        {session.needed ? <SignIn rejected={session.rejected} /> : <Signed key={session.epoch} />}
      </main>
    </>
  );
}
