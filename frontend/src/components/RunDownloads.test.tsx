import { cleanup, fireEvent, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { auth } from "../api/auth";
import { RunDownloads } from "./RunDownloads";

afterEach(() => {
  cleanup();
  vi.restoreAllMocks();
  window.localStorage.clear();
});

describe("RunDownloads", () => {
  it("links the report and both export formats of the run, with file names", () => {
    render(<RunDownloads runId="run/1" />);
    const report = screen.getByRole("link", { name: "Download report" });
    expect(report.getAttribute("href")).toBe("/api/runs/run%2F1/report");
    expect(report.getAttribute("download")).toBe("run/1-report.html");
    expect(screen.getByRole("link", { name: "Export CSV" }).getAttribute("href")).toBe("/api/runs/run%2F1/export?format=csv");
    expect(screen.getByRole("link", { name: "Export Parquet" }).getAttribute("href"))
      .toBe("/api/runs/run%2F1/export?format=parquet");
  });

  it("fetches with the stored token instead of following the plain link", () => {
    auth.signIn("secret-token");
    const fetchMock = vi.spyOn(globalThis, "fetch").mockResolvedValue(new Response("step\n", { status: 200 }));
    render(<RunDownloads runId="r1" />);
    const link = screen.getByRole("link", { name: "Export CSV" });
    const event = new MouseEvent("click", { bubbles: true, cancelable: true });
    fireEvent(link, event);
    expect(event.defaultPrevented).toBe(true);
    expect(fetchMock).toHaveBeenCalledTimes(1);
    const [url, init] = fetchMock.mock.calls[0] as [string, RequestInit];
    expect(url).toBe("/api/runs/r1/export?format=csv");
    expect((init.headers as Record<string, string>).Authorization).toBe("Bearer secret-token");
  });

  it("leaves the plain link alone when no token is stored", () => {
    const fetchMock = vi.spyOn(globalThis, "fetch");
    render(<RunDownloads runId="r1" />);
    const event = new MouseEvent("click", { bubbles: true, cancelable: true });
    fireEvent(screen.getByRole("link", { name: "Download report" }), event);
    expect(event.defaultPrevented).toBe(false);
    expect(fetchMock).not.toHaveBeenCalled();
  });
});
