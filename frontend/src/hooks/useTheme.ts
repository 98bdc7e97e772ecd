/** Dark/light theme on <html data-theme>, remembered in localStorage. */
import { useCallback, useSyncExternalStore } from "react";

export type Theme = "dark" | "light";
const KEY = "rlhfkit.theme";
const listeners = new Set<() => void>();

function current(): Theme {
  return document.documentElement.dataset.theme === "light" ? "light" : "dark";
}

export function useTheme(): [Theme, () => void] {
  const theme = useSyncExternalStore(
    (fn) => {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
    current,
  );
  const toggle = useCallback(() => {
    const next: Theme = current() === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    try {
      localStorage.setItem(KEY, next);
    } catch {
      /* private mode: the choice lasts for this page */
    }
    listeners.forEach((fn) => fn());
  }, []);
  return [theme, toggle];
}

/** A CSS custom property's value (for canvas drawing, which cannot use var()). */
export function cssVar(name: string, fallback = "#888"): string {
  if (typeof document === "undefined") return fallback;
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}
